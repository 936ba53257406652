"""Frozen text encoders behind one interface, tested with a tiny randomly initialised T5 saved to a folder
(nothing downloads here): encoding, the batch transform, the disk cache, and prompts at sampling time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polydiff.modalities.nn.text import encode_bytes

transformers = pytest.importorskip("transformers", reason="the optional 'text' extra")


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("tiny_t5")
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    words = ["bold capital letter A B C", "small letter a b c digit 1 2 3 serif italic monospace"]
    tokenizer.train_from_iterator(words, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "</s>"]))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                                eos_token="</s>")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=fast.vocab_size, d_model=16, d_ff=32, num_layers=1, num_heads=2,
                                   d_kv=8, pad_token_id=0, decoder_start_token_id=0)
    transformers.T5EncoderModel(config).save_pretrained(folder)
    return folder


def test_the_encoder_interface(tiny_t5):
    from polydiff.data.text import TextEncoder

    encoder = TextEncoder(str(tiny_t5), length=6)
    tokens, mask = encoder(["bold capital letter A", "small letter b"])
    assert tokens.shape == (2, 6, 16) and encoder.dim == 16 and tokens.dtype == torch.float32
    assert mask.tolist() == [[True] * 4 + [False] * 2, [True] * 3 + [False] * 3]
    again, _ = encoder(["bold capital letter A"])
    torch.testing.assert_close(again[0], tokens[0])  # frozen and deterministic


def test_an_encoder_that_cannot_load_is_one_line(tmp_path):
    from polydiff.data.text import TextEncoder
    from polydiff.errors import UserError

    with pytest.raises(UserError, match="cannot load the text encoder"):
        TextEncoder(str(tmp_path / "nothing"), 4)


def test_the_transform_adds_tokens_and_its_cache_round_trips(tiny_t5, tmp_path):
    from polydiff.data.text import TextEmbeddings, TextEmbeddingsOptions, read_cache, write_cache

    transform = TextEmbeddings(TextEmbeddingsOptions(encoder=str(tiny_t5), length=5))
    batch = {"x": torch.zeros(3, 1, 4, 4), "cond": {"caption_ids": encode_bytes(["bold letter A", "", "small letter b"],
                                                                                32)}}
    out = transform(batch, [torch.Generator()] * 3)["cond"]
    assert out["text"].shape == (3, 5, 16) and out["text_mask"].dtype == torch.bool
    assert not out["text_mask"][1].any()  # the empty caption: all False, the backbone's null tokens
    write_cache(tmp_path / "cache.safetensors", transform.cache)
    cached = TextEmbeddings(TextEmbeddingsOptions(encoder="not/loaded/at/all", length=5,
                                                  cache=str(tmp_path / "cache.safetensors")))
    again = cached(batch, [torch.Generator()] * 3)["cond"]  # served from the file: the encoder is never loaded
    torch.testing.assert_close(again["text"], out["text"])
    assert cached._encoder is None and len(read_cache(tmp_path / "cache.safetensors")) == 2


def test_a_text_model_trains_and_samples_from_a_prompt(tiny_t5, tmp_path, capsys):
    from polydiff.cli import main

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "image" / "glyphs_text.toml"
    sets = ["train.steps=2", "data.batch_size=4", "data.options.num_samples=16", "data.options.size=8",
            "model.options.text=embeddings", "model.options.text_dim=16", "model.options.text_length=5",
            f'data.transforms=[{{name = "text_embeddings", options = {{encoder = "{tiny_t5}", length = 5}}}}]',
            "train.sample_every=0", "train.val_every=0", f'train.out_dir="{tmp_path}"']
    assert main(["train", str(recipe), *[a for s in sets for a in ("--set", s)]]) == 0
    model = next(tmp_path.glob("*/model"))
    assert main(["sample", str(model), "--prompt", "bold capital letter A", "small letter b", "--num", "4",
                 "--steps", "2", "--out", str(tmp_path / "drawn")]) == 0
    assert (tmp_path / "drawn" / "samples.png").is_file()
