"""Byte-level tokenizer: ids 0-255 are the UTF-8 bytes, then BOS, EOS and PAD."""

from __future__ import annotations

from collections.abc import Iterable


class ByteTokenizer:
    """UTF-8 bytes as tokens. `decode(encode(s)) == s` for every str without lone surrogates."""

    bos_id = 256  # begin of sequence; starts every prompt
    eos_id = 257  # end of sequence; ends every answer
    pad_id = 258  # padding; never attended to, never a target
    vocab_size = 259

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of `text`, optionally framed by BOS/EOS."""
        ids = list(text.encode("utf-8"))
        if bos:
            ids.insert(0, self.bos_id)
        if eos:
            ids.append(self.eos_id)
        return ids

    def token_bytes(self, i: int) -> bytes:
        """The bytes token `i` stands for (none for the special tokens)."""
        return bytes([i]) if 0 <= i < 256 else b""

    def encode_bytes(self, data: bytes) -> list[int]:
        """Token ids of raw bytes (a DRY breaker's tail): the bytes themselves."""
        return list(data)

    def decode(self, ids: Iterable[int], *, stop_at_eos: bool = False) -> str:
        """Text of the byte tokens in `ids`; special tokens are skipped (or, with
        stop_at_eos, EOS ends the text). Invalid UTF-8 becomes U+FFFD."""
        out = bytearray()
        for i in ids:
            i = int(i)
            if i < 256:
                out.append(i)
            elif i == self.eos_id and stop_at_eos:
                break
        return out.decode("utf-8", errors="replace")

    def __eq__(self, other):
        return isinstance(other, ByteTokenizer)

    def __hash__(self):
        return hash(ByteTokenizer)

    def to_dict(self) -> dict:
        return {"kind": "byte", "vocab_size": self.vocab_size, "bos_id": self.bos_id,
                "eos_id": self.eos_id, "pad_id": self.pad_id}
