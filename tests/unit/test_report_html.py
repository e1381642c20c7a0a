"""The report page's renderer: every text escaped (a response quoted in a table cannot
inject markup), then only **bold** and `code` rendered; lists grouped; plots embedded."""

from __future__ import annotations

import base64
import struct
import zlib

from synth_ray.report.html import blocks, render


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


def test_text_is_escaped_then_emphasis_and_code_rendered(tmp_path) -> None:
    md = ("# Title\n\nA **verdict** on `config.yaml` <script>alert(1)</script>\n\n"
          "- first **holds**\n- second\n\n| a | b |\n|---|---|\n| <img src=x> | `c` |\n")
    assert [b["kind"] for b in blocks(md)] == ["heading", "text", "list", "table"]
    (tmp_path / "p.png").write_bytes(tiny_png())
    page = render(md, ["p.png"], tmp_path, "t & <t>")
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<td>&lt;img src=x&gt;</td>" in page and "<td><code>c</code></td>" in page
    assert "A <strong>verdict</strong> on <code>config.yaml</code>" in page
    assert "<ul><li>first <strong>holds</strong></li><li>second</li></ul>" in page
    assert "<title>t &amp; &lt;t&gt;</title>" in page
    uri = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
    assert f'<img src="{uri}" alt="p.png">' in page
