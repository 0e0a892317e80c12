"""Where every named trace comes from: publisher, pinned URL, licence, citation and checksum.

This is a data table (no I/O). ``dpbalance trace fetch`` downloads ``Source.url`` (or the same file name
from a mirror), checks ``size`` and ``sha256`` (both of the publisher's **uncompressed** bytes) and writes
a gzip copy into the trace directory as ``Source.file``. ``trace list`` and ``trace info`` show the
origin and licence from here.

Kinds:

* ``pinned``: a file in a public Git repository, fetched from raw.githubusercontent.com at a fixed commit,
  with a known size and sha256. ``trace fetch --all`` fetches these.
* ``user``: large files the publisher hosts elsewhere (Azure Blob Storage, Git LFS). ``trace fetch NAME``
  tries the publisher's URL; if that is not possible the user downloads the file and adds it by hand.
* ``bundled``: shipped inside the package (``sample``); nothing to fetch.
"""

from __future__ import annotations

from dataclasses import dataclass

RAW_GITHUB = "https://raw.githubusercontent.com"
GITHUB_LFS = "https://media.githubusercontent.com/media"
AZURE_BLOB = "https://azurepublicdatasettraces.blob.core.windows.net/azurellminfererencetrace"

AZURE_REPO = "Azure/AzurePublicDataset"
AZURE_2023_COMMIT = "790921015d50dd6aae7f7e47f39ba0e235ad6b08"
MOONCAKE_REPO = "kvcache-ai/Mooncake"
MOONCAKE_COMMIT = "3cca71daccf2a7afb8fe3f0295358f70e3a69fdb"
BFIO_REPO = "Echoscd/Load-Balancing-Release"
BFIO_COMMIT = "54539d60919911d0d2fe7eb45b854dab0d4ba0bc"
VIDUR_REPO = "microsoft/vidur"
VIDUR_COMMIT = "6d98aa8f71696520acc603d87439e77cc78160a7"
BAILIAN_REPO = "alibaba-edu/qwen-bailian-usagetraces-anon"
BURSTGPT_REPO = "HPMLL/BurstGPT"
BURSTGPT_COMMIT = "5d93d820d9b6bee4e26914df003e5713538164ae"

CITE_SPLITWISE = (
    'P. Patel, E. Choukse, C. Zhang, A. Shah, Í. Goiri, S. Maleki, R. Bianchini, "Splitwise: Efficient '
    'generative LLM inference using phase splitting", ISCA 2024.'
)
CITE_DYNAMOLLM = (
    'J. Stojkovic, C. Zhang, Í. Goiri, J. Torrellas, E. Choukse, "DynamoLLM: Designing LLM Inference Clusters '
    'for Performance and Energy Efficiency", HPCA 2025 (arXiv:2408.00741).'
)
CITE_MOONCAKE = (
    'R. Qin, Z. Li, W. He, J. Cui, F. Ren, M. Zhang, Y. Wu, W. Zheng, X. Xu, "Mooncake: Trading More Storage '
    'for Less Computation — A KVCache-centric Architecture for Serving LLM Chatbot", USENIX FAST 2025, '
    "pp. 155–170."
)
CITE_BFIO = (
    'Z. Chen, T. Bu, C. Song, X. Lu, Y. Ye, Z. Zhou, "A Universal Load Balancing Principle and Its Application '
    'to Large Language Model Serving", arXiv:2601.17855, 2026; and the dataset it draws lengths from.'
)
CITE_BAILIAN = (
    'Alibaba Cloud Model Studio (Bailian), "Qwen-Bailian anonymous usage traces", '
    "github.com/alibaba-edu/qwen-bailian-usagetraces-anon, 2025."
)
CITE_VIDUR = 'A. Agrawal et al., "Vidur: A Large-Scale Simulation Framework for LLM Inference", MLSys 2024.'
CITE_BURSTGPT = (
    'Y. Wang et al., "BurstGPT: A Real-World Workload Dataset to Optimize LLM Serving Systems", KDD \'25, '
    "doi:10.1145/3711896.3737413."
)

AZURE_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MOONCAKE_HEADER = ('"timestamp"', '"input_length"', '"output_length"')
BAILIAN_HEADER = ('"chat_id"', '"timestamp"', '"input_length"', '"output_length"')


def _bailian(name: str, upstream: str, what: str) -> Source:
    return Source(
        name,
        f"{name}.jsonl.gz",
        "user",
        publisher=f"Alibaba Cloud Model Studio (Qwen-Bailian usage traces: {what})",
        licence="Apache-2.0",
        citation=CITE_BAILIAN,
        url=f"{RAW_GITHUB}/{BAILIAN_REPO}/main/{upstream}",
        repository=BAILIAN_REPO,
        path=upstream,
        expect=BAILIAN_HEADER,
        note="two hours of one Qwen serving instance: sessions (chat and parent ids, turns) and 16-token block "
        "hashes; fetched from the repository's main branch, no published checksum",
    )


@dataclass(frozen=True)
class Source:
    name: str  # trace name (the catalog's key)
    file: str  # file written into the trace directory: gzip of the publisher's bytes
    kind: str  # pinned | user | bundled
    publisher: str
    licence: str
    citation: str
    url: str | None = None  # the publisher's download URL
    repository: str | None = None  # GitHub owner/name
    path: str | None = None  # path inside the repository
    commit: str | None = None  # pinned commit (the file's last change)
    rows: int | None = None  # requests in the file
    size: int | None = None  # bytes of the uncompressed file
    sha256: str | None = None  # of the uncompressed file
    expect: tuple[str, ...] = ()  # strings the first line must contain (guards unverified downloads)
    note: str = ""  # what else a user should know (large file, synthetic arrivals, ...)

    @property
    def upstream_file(self) -> str:
        """The publisher's file name: the name a mirror serves it under."""
        return (self.url or self.file).rsplit("/", 1)[-1]

    @property
    def origin(self) -> str:
        """One line: where the file comes from."""
        if self.repository and self.path:
            at = f" @ {self.commit[:12]}" if self.commit else ""
            return f"github.com/{self.repository}: {self.path}{at}"
        return self.url or self.publisher


def _raw(repo: str, commit: str, path: str) -> str:
    return f"{RAW_GITHUB}/{repo}/{commit}/{path}"


def _pinned(name: str, file: str, repo: str, commit: str, path: str, **kw) -> Source:
    return Source(name, file, "pinned", url=_raw(repo, commit, path), repository=repo, path=path, commit=commit, **kw)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        _pinned(
            "azure-code-2023",
            "azure-code-2023.csv.gz",
            AZURE_REPO,
            AZURE_2023_COMMIT,
            "data/AzureLLMInferenceTrace_code.csv",
            publisher="Microsoft Azure (Azure Public Dataset, LLM inference trace 2023)",
            licence="CC-BY-4.0",
            citation=CITE_SPLITWISE,
            rows=8819,
            size=320117,
            sha256="54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6",
            expect=AZURE_HEADER,
        ),
        _pinned(
            "azure-conv-2023",
            "azure-conv-2023.csv.gz",
            AZURE_REPO,
            AZURE_2023_COMMIT,
            "data/AzureLLMInferenceTrace_conv.csv",
            publisher="Microsoft Azure (Azure Public Dataset, LLM inference trace 2023)",
            licence="CC-BY-4.0",
            citation=CITE_SPLITWISE,
            rows=19366,
            size=719188,
            sha256="2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8",
            expect=AZURE_HEADER,
        ),
        _pinned(
            "mooncake-conversation",
            "mooncake-conversation.jsonl.gz",
            MOONCAKE_REPO,
            MOONCAKE_COMMIT,
            "FAST25-release/traces/conversation_trace.jsonl",
            publisher="Moonshot AI (Mooncake, FAST'25 release)",
            licence="Apache-2.0 (repository licence; no separate data licence)",
            citation=CITE_MOONCAKE,
            rows=12031,
            size=3029533,
            sha256="b8cbb061a85206d729d91cdc2981f43c9e0d99209dce588d3af5f7934408b9df",
            expect=MOONCAKE_HEADER,
        ),
        _pinned(
            "mooncake-synthetic",
            "mooncake-synthetic.jsonl.gz",
            MOONCAKE_REPO,
            MOONCAKE_COMMIT,
            "FAST25-release/traces/synthetic_trace.jsonl",
            publisher="Moonshot AI (Mooncake, FAST'25 release)",
            licence="Apache-2.0 (repository licence; no separate data licence)",
            citation=CITE_MOONCAKE,
            rows=3993,
            size=1136313,
            sha256="bd070915a98fc0ed264d7cfef2ce746002eb3076a695ec31ba2674c0111ec131",
            expect=MOONCAKE_HEADER,
            note="arrival times are synthetic (Poisson), not production timing",
        ),
        _pinned(
            "bfio-arxiv",
            "bfio-arxiv.json.gz",
            BFIO_REPO,
            BFIO_COMMIT,
            "arxiv_data_8000.json",
            publisher="BF-IO paper authors (Load-Balancing-Release simulator)",
            licence="none stated (token counts derived from ccdv/arxiv-summarization)",
            citation=CITE_BFIO,
            rows=8000,
            size=1281545,
            sha256="6c45abface3b26619953fd91c981ec93d861ac9910fccf3816103df3901f285f",
            expect=("{",),
            note="request lengths only, no arrival times",
        ),
        _pinned(
            "bfio-burst",
            "bfio-burst.json.gz",
            BFIO_REPO,
            BFIO_COMMIT,
            "burst_data_8000.json",
            publisher="BF-IO paper authors (Load-Balancing-Release simulator)",
            licence="none stated (token counts derived from BurstGPT, CC-BY-4.0)",
            citation=CITE_BFIO,
            rows=8000,
            size=525317,
            sha256="f030a60ce35565661e0669484037f823af68a48fcf51e9ef043c9223e4580361",
            expect=("{",),
            note="request lengths only, no arrival times",
        ),
        _pinned(
            "bfio-longbench",
            "bfio-longbench.json.gz",
            BFIO_REPO,
            BFIO_COMMIT,
            "longbench_data_8000.json",
            publisher="BF-IO paper authors (Load-Balancing-Release simulator)",
            licence="none stated (token counts derived from zai-org/LongBench-v2)",
            citation=CITE_BFIO,
            rows=8000,
            size=546843,
            sha256="03677fdcc5d46eb6fe47fffb7de07b43f95ab2395db48430d8dc4071dde1d8c7",
            expect=("{",),
            note="request lengths only, no arrival times",
        ),
        _pinned(
            "vidur-arxiv",
            "vidur-arxiv.csv.gz",
            VIDUR_REPO,
            VIDUR_COMMIT,
            "data/processed_traces/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
            publisher="Microsoft Research (Vidur simulator)",
            licence="MIT",
            citation=CITE_VIDUR,
            rows=28257,
            size=884932,
            sha256="9d3580538d915ca75e4aaaa54590b42dbb17abc6d74c8913310cf07c232adcdc",
            expect=("num_prefill_tokens", "num_decode_tokens"),
            note="request lengths only, no arrival times",
        ),
        Source(
            "azure-code-2024",
            "azure-code-2024.csv.gz",
            "user",
            publisher="Microsoft Azure (Azure Public Dataset, LLM inference trace 2024)",
            licence="CC-BY-4.0",
            citation=CITE_DYNAMOLLM,
            url=f"{AZURE_BLOB}/AzureLLMInferenceTrace_code_1week.csv",
            repository=AZURE_REPO,
            expect=AZURE_HEADER,
            note="about 0.7 GB, hosted on Azure Blob Storage; no published checksum",
        ),
        Source(
            "azure-conv-2024",
            "azure-conv-2024.csv.gz",
            "user",
            publisher="Microsoft Azure (Azure Public Dataset, LLM inference trace 2024)",
            licence="CC-BY-4.0",
            citation=CITE_DYNAMOLLM,
            url=f"{AZURE_BLOB}/AzureLLMInferenceTrace_conv_1week.csv",
            repository=AZURE_REPO,
            expect=AZURE_HEADER,
            note="about 1.1 GB, hosted on Azure Blob Storage; no published checksum",
        ),
        Source(
            "burstgpt",
            "burstgpt.csv.gz",
            "user",
            publisher="HPMLL, HKUST(GZ) (BurstGPT)",
            licence="CC-BY-4.0",
            citation=CITE_BURSTGPT,
            url=f"{GITHUB_LFS}/{BURSTGPT_REPO}/{BURSTGPT_COMMIT}/data/BurstGPT_1.csv",
            repository=BURSTGPT_REPO,
            path="data/BurstGPT_1.csv",
            commit=BURSTGPT_COMMIT,
            size=52283111,
            sha256="4bb3783693d0a435686fbfc885615d2349bd067239079fa4b749f2e679e12122",
            expect=("Timestamp", "Request tokens", "Response tokens"),
            note="52 MB in Git LFS (GitHub may refuse LFS downloads over its bandwidth quota)",
        ),
        _bailian("qwen-bailian-a", "qwen_traceA_blksz_16.jsonl", "trace A"),
        _bailian("qwen-bailian-b", "qwen_traceB_blksz_16.jsonl", "trace B, business customers"),
        _bailian("qwen-bailian-coder", "qwen_coder_blksz_16.jsonl", "coder model"),
        _bailian("qwen-bailian-thinking", "qwen_thinking_blksz_16.jsonl", "thinking model"),
        Source(
            "sample",
            "sample.csv.gz",
            "bundled",
            publisher="first 2,000 requests of mooncake-conversation (Moonshot AI)",
            licence="Apache-2.0",
            citation=CITE_MOONCAKE,
            rows=2000,
            note="shipped inside the package (see dpbalance/traces/data/SAMPLE.md)",
        ),
    )
}

PINNED = tuple(name for name, s in SOURCES.items() if s.kind == "pinned")
