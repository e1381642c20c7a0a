"""The toy corpora do not move when the machine's packages do: the corpus key (what the
tokenizer and every pre-trained toy model are cached by) comes from the standard library's
text and the licence text shipped with the project, so a `pip install` re-pre-trains nothing."""

from __future__ import annotations

import importlib.metadata
import site
import sysconfig

from synth_ray.toy import corpora, pretrain

# A prose paragraph of the kind the licence corpus keeps: had the corpus read the installed
# packages' licence files (as it once did), this would become one of its rows.
LICENSE = """Fake Licence

Permission is hereby granted to anyone who reads this sentence in a unit test of synth-ray.
The rest of this paragraph is long enough to be kept as a response by the corpus reader,
and it ends with a full stop, as every kept paragraph must.
"""


def _key_from_scratch(cache, monkeypatch) -> str:
    """The corpus built anew in an empty cache folder (nothing read from an earlier build)."""
    monkeypatch.setenv("SYNTH_RAY_CACHE", str(cache))
    pretrain.corpus_fingerprint.cache_clear()
    pretrain.corpus_key.cache_clear()
    return pretrain.corpus_key()


def test_installing_a_package_leaves_the_corpus_key_unchanged(tmp_path, monkeypatch) -> None:
    before = _key_from_scratch(tmp_path / "cache-1", monkeypatch)
    # a package installed as pip lays one out: a dist-info folder with its METADATA and
    # LICENSE in a site-packages folder that Python reads
    packages = tmp_path / "site-packages"
    info = packages / "zz_fake_pkg-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zz-fake-pkg\nVersion: 1.0\n")
    (info / "LICENSE").write_text(LICENSE)
    monkeypatch.syspath_prepend(str(packages))
    monkeypatch.setattr(site, "getsitepackages", lambda: [str(packages)])
    real = sysconfig.get_paths()
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: {**real,
                                                                 "purelib": str(packages)})
    assert importlib.metadata.version("zz-fake-pkg") == "1.0"  # Python sees it installed
    after = _key_from_scratch(tmp_path / "cache-2", monkeypatch)
    assert after == before
    rows = corpora.corpus_rows("licenses")
    assert not any("synth-ray" in str(r["response"]) for r in rows)
    pretrain.corpus_fingerprint.cache_clear()
    pretrain.corpus_key.cache_clear()


def test_the_licence_corpus_is_the_shipped_text() -> None:
    rows = corpora.corpus_rows("licenses")
    assert len(rows) > 1000 and {r["category"] for r in rows} == {"licenses"}
    text = corpora.LICENSES.read_text(encoding="utf-8")
    assert all(str(r["instruction"]) in text for r in rows)
    assert sum(bool(r["prose"]) for r in rows) > 200  # prompts for the demo come from these
