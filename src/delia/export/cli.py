"""`delia export RUN OUT`: parse options, call `delia.export.export`, print what was written."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the `export` command to the delia CLI."""

    @app.command("export", context_settings={"allow_extra_args": False})
    def export_cmd(
        run: Path = typer.Argument(..., help="A finished training run (e.g. the steps/train/KEY the report names)."),
        out: Path = typer.Argument(..., help="Directory to create."),
        fmt: str = typer.Option("hf", "--format", help="hf: merged Hugging Face directory (transformers, vLLM); "
                                                     "gguf: + llama.cpp GGUF files; ollama / all: + a Modelfile."),
        quant: str = typer.Option("f16,q8_0", "--quant", help="GGUF types, comma-separated: f16, q8_0, bf16, f32."),
        dtype: str = typer.Option("base", "--dtype", help="HF weights: base (the base model's dtype) | fp32 | bf16 "
                                                        "| fp16."),
        force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
        converter: str = typer.Option(None, "--converter", help="llama.cpp's convert_hf_to_gguf.py or a llama.cpp "
                                                              "checkout (default: $DELIA_LLAMA_CPP, else the "
                                                              "cached copy)."),
        fetch: bool = typer.Option(False, "--fetch-converter", help="Download llama.cpp's converter from the "
                                                                    "package index (llama-cpp-python's source) "
                                                                    "once, into delia's cache."),
    ) -> None:
        """Ship a tuned model: merged HF directory + model card, GGUF for llama.cpp, Modelfile for Ollama.

        \b
          delia export RUN OUT                       transformers / vLLM:  vllm serve OUT
          delia export RUN OUT --format gguf         + OUT/gguf/model-f16.gguf, model-q8_0.gguf (llama.cpp)
          delia export RUN OUT --format ollama       + OUT/gguf/Modelfile:  ollama create NAME -f OUT/gguf/Modelfile
        """
        from delia.export import export

        quants = tuple(q.strip() for q in quant.split(",") if q.strip())
        done = export(run, out, fmt=fmt, quants=quants, dtype=dtype, force=force, converter=converter, fetch=fetch)
        typer.echo(f"exported {run} -> {done.out} ({done.info['dtype']}, {len(done.files)} files, "
                   f"{done.seconds:.0f} s)")
        for token, tid in done.info["tokens"].items():
            typer.echo(f"  {token}: special token {tid}" + "".join(
                f"; {q}.gguf: {c[token]['type']} token {c[token]['id']}" for q, c in done.gguf.items()))
        typer.echo(f"  load: AutoModelForCausalLM.from_pretrained('{done.out}')")
        if (done.out / "gguf" / "Modelfile").exists():
            typer.echo(f"  ollama create NAME -f {done.out / 'gguf' / 'Modelfile'}")
