"""A character tokenizer whose ids for printable ASCII equal Qwen2's (`ord(c) - 33`).

Qwen2's byte-level BPE gives every printable ASCII character its own id `ord(c) - 33` ('0' -> 15,
',' -> 11, '.' -> 13, ';' -> 26). LLMTime text only uses such characters, so an encoded series gets the
same ids and the same length here as with the real tokenizer, while the vocabulary stays tiny (97
entries instead of 151,936), which is what makes a CPU-sized model train in minutes. The specials keep
Qwen's names; their ids (94, 95, 96) are the tiny model's own.

Built with the `tokenizers` library (WordLevel model over single characters) and wrapped as a
`PreTrainedTokenizerFast`, so it saves, loads and pads like any HF tokenizer.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
UNK_TOKEN = "<unk>"
N_PRINTABLE = 94  # '!' (33) .. '~' (126)
PAD_ID, EOS_ID, UNK_ID = N_PRINTABLE, N_PRINTABLE + 1, N_PRINTABLE + 2
VOCAB_SIZE = N_PRINTABLE + 3


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny tokenizer: left padding (for batched generation), pad and eos set."""
    vocab = {chr(i + 33): i for i in range(N_PRINTABLE)}
    vocab.update({PAD_TOKEN: PAD_ID, EOS_TOKEN: EOS_ID, UNK_TOKEN: UNK_ID})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="left",
    )
