"""`EvalConfig`: everything `delia eval` needs, loadable from YAML with `key.sub=value` overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from delia.config import DEFAULT_TOKEN, ConfigError, opt
from delia.evaluation.instructions import parse_spec

HALU = "builtin:halu"  # packaged data (delia.data.sources); any path or hub id works instead
SLOT = "{slot}"
# the paper's plug-and-play demo sentence; the token or a concept word fills the slot (baselines.md §10)
DEFAULT_PROBE = ("Q: what is the color of apple. A: apple is purple. "
                 "Check context for hallucinations, follow the{slot} format.")
# the prior description D_sep fixed in baselines.md §0, used for the `desc` instruction variant
HELDOUT = f"{HALU}/valid"  # the authors' validation rows: 11 phrasings, the `heldout` set when heldout_file is unset
TOKEN_DESCRIPTION = ("a json object with two keys, 'thought' (a short analysis of whether the ChatGPT response "
                     "contains hallucinations) and 'hallucination' ('yes' or 'no')")


@dataclass
class GenerationOptions:
    batch_size: int = opt(16, help="prompts per generation batch (length-sorted)")
    max_new_tokens: int | None = opt(None, help="generation budget per reply; unset = from the data: "
                                                "max(256, 2 x p99 of the gold replies' token lengths), see "
                                                "docs/evaluation.md; the value used is in metrics.json['budget']")
    budget_floor: int | None = opt(None, help="the smallest budget the data rule may choose (unset = 256); `delia "
                                              "run` sets 64 when its task gives no max_new_tokens")
    temperature: float = opt(0.0, help="0 = greedy (default)")
    top_p: float = opt(1.0, help="nucleus sampling mass when temperature > 0")
    stop_early: bool = opt(True, help="stop a row once its answer is complete (halu: the first {...} closed; "
                                      "translation with first_line: the first line ended)")

    def __post_init__(self) -> None:
        if self.batch_size < 1 or (self.max_new_tokens is not None and self.max_new_tokens < 1):
            raise ConfigError("generation.batch_size and generation.max_new_tokens must be >= 1")
        if self.budget_floor is not None and self.budget_floor < 1:
            raise ConfigError(f"generation.budget_floor must be >= 1, got {self.budget_floor}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError("generation.temperature must be >= 0 and generation.top_p in (0, 1]")


@dataclass
class HaluOptions:
    instructions: str = opt("seen:1,unseen:1", help="instruction sets, e.g. 'seen:5,unseen:all,explicit' "
                                                   "(see docs/evaluation.md)")
    seen_file: str = opt(f"{HALU}/train", help="training file whose instructions form the 'seen' set")
    unseen_file: str = opt(f"{HALU}/instructions_unseen", help="one unseen instruction per line")
    explicit_file: str = opt(f"{HALU}/explicit_instruction", help="the long explicit instruction")
    # None (not the path itself) as the default, so stage hashes of configs that never use it do not change
    heldout_file: str | None = opt(None, help="chat rows whose instructions form the 'heldout' set (unset: the "
                                              f"authors' validation rows, {HELDOUT})")
    special_tokens: list[str] = opt([DEFAULT_TOKEN], help="tokens the instructions use for the format")
    token_description: str = opt(TOKEN_DESCRIPTION, help="replaces the token in the 'desc' variants")
    token_init: Literal["random", "mean", "mean_vocab", "none"] = opt(
        "random", help="when the model lacks a special token the prompts use: add it with this init "
                       "(random = the paper's untrained baseline, seeded N(0, initializer_range^2)); "
                       "none = leave it out, so the text '<sep>' is tokenised as plain characters")
    token_seed: int = opt(2024, help="seed of the random init (the authors used 2024)")
    keys: list[str] = opt(["thought", "hallucination"], help="exact keys for the strict format score")
    label_key: str = opt("hallucination", help="key holding the yes/no label")

    @property
    def heldout_path(self) -> str:
        return self.heldout_file or HELDOUT

    def __post_init__(self) -> None:
        parse_spec(self.instructions)
        if self.label_key not in self.keys:
            raise ConfigError(f"halu.label_key {self.label_key!r} must be one of halu.keys {self.keys}")


@dataclass
class TranslationOptions:
    template: str = opt("Translate the following {src_lang} text into {tgt_lang}:\n{src}",
                        help="user turn; {src}, {src_lang}, {tgt_lang} (language names) are filled in")
    first_line: bool = opt(True, help="keep only the first non-empty line of the reply (after the preamble)")
    bleurt_checkpoint: str | None = opt(None, help="local BLEURT (PyTorch) checkpoint dir; needs bleurt-pytorch")
    comet_checkpoint: str | None = opt(None, help="local COMET checkpoint (.ckpt); needs unbabel-comet")

    def __post_init__(self) -> None:
        if "{src}" not in self.template:
            raise ConfigError("translation.template must contain {src}")


CUSTOM_TEMPLATE = "{context}\n\n{instruction}"


@dataclass
class CustomTaskOptions:
    """Options of the generic json / label / text tasks (your own task, configured with no code)."""

    template: str = opt(CUSTOM_TEMPLATE, help="the user turn; {context} (the example's input) and {instruction} "
                                             "(a phrasing) are filled in, as BuildConfig.template")
    instructions: str = opt("seen:1,unseen:1", help="instruction sets: seen, unseen, own, with -notoken/-desc "
                                                   "variants and :K (the halu spec grammar)")
    seen_file: str | None = opt(None, help="one instruction phrasing per line: the phrasings trained on")
    unseen_file: str | None = opt(None, help="one instruction phrasing per line: held out, never trained on")
    special_tokens: list[str] = opt(["<sep>"], help="tokens the instructions use for the format")
    token_description: str | None = opt(None, help="replaces the token in `-desc` variants; the text a `mean` "
                                                   "init averages")
    token_init: Literal["random", "mean", "mean_vocab", "none"] = opt(
        "random", help="how a model that lacks a special token gets it (none = left as plain text)")
    token_seed: int = opt(2024, help="seed of the random init")
    keys: list[str] | None = opt(None, help="json: required keys (unset: the keys of every gold output)")
    values: dict[str, list[str]] | None = opt(None, help="json: allowed values per key (unset: inferred for keys "
                                                         "with at most 10 distinct gold values, some repeated)")
    label_key: str | None = opt(None, help="json: the key whose value is the label (unset: the one key with "
                                           "allowed values, if exactly one)")
    labels: list[str] | None = opt(None, help="label: the label set (unset: the distinct gold outputs)")
    metrics: list[str] = opt(["exact", "chrf", "bleu"], help="text: any of exact, chrf, bleu")

    def __post_init__(self) -> None:
        for item in parse_spec(self.instructions):
            if item.set not in ("seen", "unseen", "own"):
                raise ConfigError(f"custom.instructions: set {item.set!r} is a halu set; custom tasks have "
                                  "seen, unseen and own")
        if "{context}" not in self.template:
            raise ConfigError("custom.template must contain {context}")
        bad = [m for m in self.metrics if m not in ("exact", "chrf", "bleu")]
        if bad or not self.metrics:
            raise ConfigError(f"custom.metrics: {bad or 'empty'}; choose from exact, chrf, bleu")
        if self.variant_needs_description() and not self.token_description:
            raise ConfigError("custom.instructions uses a -desc variant: set custom.token_description")
        if self.label_key is not None and self.keys is not None and self.label_key not in self.keys:
            raise ConfigError(f"custom.label_key {self.label_key!r} must be one of custom.keys {self.keys}")

    def variant_needs_description(self) -> bool:
        return any(i.variant == "desc" for i in parse_spec(self.instructions))


@dataclass
class AnalysisOptions:
    score: Literal["auto", "on", "off"] = opt(
        "auto", help="teacher-forced loss + first-token state space; auto = only when the data has gold replies")
    score_batch_size: int = opt(4, help="rows per scoring forward pass")
    hidden: bool = opt(True, help="L2/cosine of the special token vs concept words at every layer")
    concept_words: list[str] = opt(["json", "thought"], help="words compared with the special token")
    probe: str = opt(DEFAULT_PROBE, help=f"sentence with one {SLOT} where the token / words are placed")

    def __post_init__(self) -> None:
        if self.probe.count(SLOT) != 1:
            raise ConfigError(f"analysis.probe must contain {SLOT} exactly once")
        if self.score_batch_size < 1:
            raise ConfigError("analysis.score_batch_size must be >= 1")


@dataclass
class EvalConfig:
    """One evaluation: a model (and adapter) on one task's data, written to `out`."""

    data: str = opt("", help="examples file (halu: test rows {context,label} or chat rows; translation: src/ref)")
    out: str = opt("", help="output directory (metrics.json, predictions.jsonl, summary.md, plots)")
    task: str = opt("halu", help="a registered task (`delia ls tasks`): halu (JSON hallucination check), "
                                 "translation, or your own json | label | text task (options under `custom`)")
    model: str | None = opt(None, help="base model name or path (default: the adapter's recorded base, "
                                       "else the embedded smollm2-135m-instruct)")
    adapter: str | None = opt(None, help="training run directory (delia train --out) to load on top")
    merge_adapter: bool = opt(True, help="merge the adapter into the weights (faster generation)")
    dtype: str = opt("auto", help="auto | fp32 | bf16 | fp16 (auto: as the adapter was trained, bit for bit; "
                                  "without an adapter, bf16 only where the hardware has it)")
    device: str = opt("cpu", help="torch device")
    threads: int | None = opt(None, help="torch CPU threads (default: torch's choice); on cores shared with other "
                                         "jobs, 1 thread avoids OpenMP oversubscription and can be several x faster")
    limit: int | None = opt(None, help="evaluate only the first N examples")
    seed: int = opt(0, help="seed for instruction sampling, sampling and bootstrap")
    bootstrap: int = opt(1000, help="bootstrap resamples for confidence intervals (0 = none)")
    ci_level: float = opt(0.95, help="confidence level of the intervals")
    resume: bool = opt(True, help="reuse generations already cached in OUT/generations.jsonl")
    prompt_hook: str | None = opt(None, help="registered 'eval prompt hook' that rewrites every prompt "
                                             "(baselines: icl, dipmt; see delia.methods.hooks)")
    decoder: str | None = opt(None, help="registered 'eval decoder' used instead of batched generation "
                                         "(baseline: arithmetic)")
    hook_options: dict[str, Any] = opt({}, help="keyword options for prompt_hook / decoder")
    # None (not "transformers") as the defaults, so stage hashes of configs that never set them do not change
    engine: str | None = opt(None, help="generation engine: transformers (unset: the model loaded here, with its "
                                        "adapter) | vllm | openai (an OpenAI-compatible server; model = the served "
                                        "name); see docs/evaluation.md")
    engine_options: dict[str, Any] | None = opt(None, help="engine options (openai: base_url, concurrency, ...; "
                                                          "vllm: tensor_parallel_size, ...; `delia ls engines`)")
    generation: GenerationOptions = field(default_factory=GenerationOptions, metadata={"help": "decoding"})
    halu: HaluOptions = field(default_factory=HaluOptions, metadata={"help": "halu task"})
    translation: TranslationOptions = field(default_factory=TranslationOptions, metadata={"help": "translation"})
    # None (not the defaults) unless set, so stage hashes of halu / translation configs do not change
    custom: CustomTaskOptions | None = field(default=None, metadata={"help": "json / label / text task"})
    analysis: AnalysisOptions = field(default_factory=AnalysisOptions, metadata={"help": "analyses"})
    max_prompt_tokens: int | None = opt(None, help="longest prompt in tokens (default: the model's context minus "
                                                   "generation.max_new_tokens)")
    long_prompts: Literal["error", "truncate"] | None = opt(
        None, help="a prompt over the limit: error (default, names FILE:LINE) | truncate (cut the middle of its "
                   "longest turn; counted in metrics.json model.prompts_cut)")

    def __post_init__(self) -> None:
        from delia.task import check_task

        check_task(self.task)
        if not self.data:
            raise ConfigError("data: an examples file is required (--data)")
        if not self.out:
            raise ConfigError("out: an output directory is required (--out)")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads must be >= 1")
        if self.dtype not in ("auto", "fp32", "float32", "bf16", "bfloat16", "fp16", "float16"):
            raise ConfigError(f"dtype: {self.dtype!r} is not one of auto, fp32, bf16, fp16")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("limit must be >= 1")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ConfigError(f"max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}")
        if self.bootstrap < 0 or not 0 < self.ci_level < 1:
            raise ConfigError("bootstrap must be >= 0 and ci_level in (0, 1)")
