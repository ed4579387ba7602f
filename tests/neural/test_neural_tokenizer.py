"""The byte tokenizer round-trips any text exactly."""

from hypothesis import given
from hypothesis import strategies as st

from neural import ByteTokenizer

tok = ByteTokenizer()


@given(st.text())
def test_round_trip_any_text(text):
    """decode(encode(s)) == s for any str (UTF-8 encodable), with or without BOS/EOS."""
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, bos=True, eos=True)) == text


@given(st.text(), st.text())
def test_decode_stops_at_eos(a, b):
    """With stop_at_eos, decoding ends at the first EOS."""
    ids = tok.encode(a, eos=True) + tok.encode(b)
    assert tok.decode(ids, stop_at_eos=True) == a


def test_ids_and_specials():
    """Bytes are ids 0-255; BOS, EOS, PAD follow; the vocabulary has 259 entries."""
    assert tok.encode("é") == [0xC3, 0xA9]
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size) == (256, 257, 258, 259)
    assert tok.encode("a", bos=True, eos=True) == [256, 97, 257]
    assert tok.decode([256, 104, 105, 258, 258]) == "hi"
