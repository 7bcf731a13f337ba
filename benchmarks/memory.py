"""Per-device memory of the Stage 1 training step for the paper's eight Trm++ sizes, and of the
Stage 2 step on Qwen2.5-3B / 7B, nothing run.

  .venv/bin/python benchmarks/memory.py [--batch 256] [--meshes 1,1,1 1,8,1] [--sizes 3m 1b]
      [--device_memory 80GiB] [--search]
  .venv/bin/python benchmarks/memory.py --align [--llms 3b 7b] [--align_meshes 1,1,1 1,2,4]

For each size (`configs/scale.py`) and mesh (data,fsdp,tensor) it plans the step with
`uqa_jax.tools.plan`: parameters, parameters + AdamW state per device, and the ahead-of-time compiled
step's per-device peak (arguments + outputs - donated + temporaries), the fsdp mesh's figure
as a fraction of one device's; `--search` adds the largest batch that fits `--device_memory`.
The item and side-feature tables have the official data's vocabulary sizes (181M parameters:
a synthetic data set is built and its dataset_info.json given the official sizes; a step's
memory depends on the table sizes, not on the ids in the rows). Runs on 8 simulated CPU
devices (set before JAX starts), so the figures are the CPU compiler's: close to, not equal to,
an accelerator's. Prints a table; writes benchmarks/results/memory.json.

`--align` plans the alignment step of `configs/qwen.py:<size>` instead (the 25M Trm++ encoder
with the official vocabularies, batch 32, chats of 512 tokens, LLM computing in bfloat16 with
remat), in two modes: adapter-only with the frozen LLM stored in bfloat16 (the config's) and a
full fine-tune with float32 LLM weights and AdamW state. The LLM's architecture comes from
`llm.config.PRESETS` (no weights needed); writes benchmarks/results/memory_align.json.
"""

import argparse
import json
import os
import sys
import tempfile

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=wrong-import-position

from configs import qwen  # pylint: disable=wrong-import-position
from configs import scale  # pylint: disable=wrong-import-position
from uqa_jax import stages  # pylint: disable=wrong-import-position
from uqa_jax.data import schema  # pylint: disable=wrong-import-position
from uqa_jax.llm import assets  # pylint: disable=wrong-import-position
from uqa_jax.llm import config as llm_config  # pylint: disable=wrong-import-position
from uqa_jax.runtime import planner  # pylint: disable=wrong-import-position
from uqa_jax.stages import pretrain  # pylint: disable=wrong-import-position
from uqa_jax.tools import plan  # pylint: disable=wrong-import-position

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "memory.json")
ALIGN_RESULTS = os.path.join(os.path.dirname(RESULTS), "memory_align.json")
ALIGN_MODES = {"adapter": {"mode": "adapter", "param_dtype": "bfloat16"},
               "full": {"mode": "full", "param_dtype": "float32"}}


def official_vocab_workdir(config) -> str:
  """A workdir whose data has the official vocabulary sizes (synthetic rows)."""
  workdir = tempfile.mkdtemp(prefix="uqa-memory-")
  stages.run("data", config, workdir, log=lambda *_: None)
  info_path = os.path.join(workdir, "data", schema.DATASET_INFO)
  with open(info_path, encoding="utf-8") as f:
    info = json.load(f)
  info["vocab_sizes"] = dict(schema.OFFICIAL_VOCAB_SIZES)
  with open(info_path, "w", encoding="utf-8") as f:
    json.dump(info, f)
  return workdir


def _mesh(text: str) -> dict:
  return dict(zip(("data", "fsdp", "tensor"), map(int, text.split(","))))


def align_table(args, memory: int) -> list[dict]:
  """The Stage 2 rows: each Qwen size x mode x mesh."""
  rows, workdir = [], None
  print(f"Stage 2 step (configs/qwen.py), batch 32 x 512 tokens, 25M Trm++ encoder with official vocabularies; "
        f"per-device GiB (CPU compiler, {jax.device_count()} simulated devices)")
  print(f"{'LLM':>4} {'mode':>8} {'mesh':>7} {'parameters':>15} {'state':>7} {'step':>8} {'of 1 dev':>8}")
  for size in args.llms:
    preset = qwen.SIZES[size][0]
    for mode, fields in ALIGN_MODES.items():
      single = None
      for mesh_text in args.align_meshes:
        config = qwen.get_config(size)
        config.data.source, config.llm.model = "synthetic", assets.DEFAULT_MODEL  # text shapes only (padded to 512)
        config.align.mode, config.llm.param_dtype = fields["mode"], fields["param_dtype"]
        config.mesh = shape = _mesh(mesh_text)
        workdir = workdir or official_vocab_workdir(config)  # the same data set for every row
        n = shape["data"] * shape["fsdp"] * shape["tensor"]
        parts = pretrain.build(config, workdir, devices=jax.devices()[:n])
        p = planner.plan(plan.config_align_target(config, workdir, parts, llm_config.PRESETS[preset]), memory)
        single = p.step.peak if n == 1 else single
        ratio = p.step.peak / single if single else float("nan")
        rows.append({"llm": preset, "mode": mode, "param_dtype": fields["param_dtype"], "mesh": shape,
                     "batch": config.align.batch_size, "text_len": config.input.max_text_len,
                     "parameters": p.parameters, "state_bytes": p.state_bytes, "step_bytes": p.step.peak,
                     "temporaries": p.step.temporaries, "fraction_of_one_device": ratio, "device_memory": memory})
        print(f"{size:>4} {mode:>8} {mesh_text:>7} {p.parameters:>15,} {p.state_bytes / planner.GiB:>7.2f} "
              f"{p.step.peak / planner.GiB:>8.2f} {ratio:>8.3f}", flush=True)
  return rows


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--meshes", nargs="+", default=["1,1,1", "1,8,1"])
  parser.add_argument("--sizes", nargs="+", default=list(scale.SIZES))
  parser.add_argument("--device_memory", default="80GiB")
  parser.add_argument("--search", action="store_true")
  parser.add_argument("--align", action="store_true", help="the Stage 2 table (Qwen2.5) instead")
  parser.add_argument("--llms", nargs="+", default=list(qwen.SIZES))
  parser.add_argument("--align_meshes", nargs="+", default=["1,1,1", "1,2,4"])
  args = parser.parse_args(argv)
  memory = planner.parse_memory(args.device_memory)
  if args.align:
    rows = align_table(args, memory)
    os.makedirs(os.path.dirname(ALIGN_RESULTS), exist_ok=True)
    with open(ALIGN_RESULTS, "w", encoding="utf-8") as f:
      json.dump(rows, f, indent=1)
    print(f"wrote {ALIGN_RESULTS}")
    return
  workdir = official_vocab_workdir(scale.get_config(args.sizes[0]))
  rows = []
  print(f"Stage 1 step, batch {args.batch} x {scale.get_config('3m').data.max_len} clicks, official vocabularies; "
        f"per-device GiB (CPU compiler, {jax.device_count()} simulated devices)")
  header = f"{'size':>5} {'mesh':>7} {'parameters':>14} {'state':>7} {'step':>8} {'of 1 dev':>8}"
  print(header + (f" {'max batch @ ' + args.device_memory:>18}" if args.search else ""))
  for size in args.sizes:
    single = None
    for mesh_text in args.meshes:
      shape = _mesh(mesh_text)
      config = scale.get_config(size)
      config.pretrain.batch_size = args.batch
      config.mesh = shape
      n = shape["data"] * shape["fsdp"] * shape["tensor"]
      parts = pretrain.build(config, workdir, devices=jax.devices()[:n])
      p = planner.plan(parts.target(), memory, search=args.search)
      single = p.step.peak if n == 1 else single
      ratio = p.step.peak / single if single else float("nan")
      rows.append({"size": size, "mesh": shape, "batch": args.batch, "parameters": p.parameters,
                   "state_bytes": p.state_bytes, "step_bytes": p.step.peak, "temporaries": p.step.temporaries,
                   "fraction_of_one_device": ratio, "max_batch": p.max_batch, "device_memory": memory})
      line = (f"{size:>5} {mesh_text:>7} {p.parameters:>14,} {p.state_bytes / planner.GiB:>7.2f} "
              f"{p.step.peak / planner.GiB:>8.2f} {ratio:>8.3f}")
      print(line + (f" {p.max_batch:>18}" if args.search else ""), flush=True)
  os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
  with open(RESULTS, "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=1)
  print(f"wrote {RESULTS}")


if __name__ == "__main__":
  main(sys.argv[1:])
