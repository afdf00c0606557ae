"""The data plane: tokenizer, token shards, `trainkit prepare`, and the exact mixed stream.

Stable API for the trainer:
    loader = MixtureLoader.from_spec(spec, plan, rank=r, world_size=w)   # opens + verifies sources
    micro_batches = loader.next_step()      # list of LongTensor (microBatchSize, seqLength + 1)
    loader.state_dict() / loader.load_state_dict(d)   # {"sequences_consumed", "seed", ...}
    loader.source_sequences()               # {source name: global sequences consumed}
    loader.close()
    tok = load_tokenizer("gpt2"); tok.encode_batch(texts); tok.save_pretrained(folder)
"""

from trainkit.data.loader import MixtureLoader, MixtureSource, sequences_needed
from trainkit.data.order import SourceExhausted
from trainkit.data.shards import DataError
from trainkit.data.tokenizer import Tokenizer, TokenizerError, load_tokenizer

__all__ = [
    "DataError",
    "MixtureLoader",
    "MixtureSource",
    "SourceExhausted",
    "Tokenizer",
    "TokenizerError",
    "load_tokenizer",
    "sequences_needed",
]
