"""Constants more than one room uses, defined once."""

#: the request header that pins a request to one data-parallel rank of a vLLM DP endpoint (vLLM's name)
DP_RANK_HEADER = "X-data-parallel-rank"

#: running sequences per rank when nothing says otherwise (vLLM's max_num_seqs as this project's defaults use it)
DEFAULT_SLOTS = 72
