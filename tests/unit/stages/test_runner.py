"""The runner's checks before any work: stages chosen by name, strict config blocks, pipeline
order, fingerprints that hold what changes results and only that (and that stay the same for the
demo's config, so existing workdirs stay valid), default workdir names."""

import json
import os

import pytest

from configs import default
from configs import smoke
from tests.conftest import ROOT
from uqa_jax import stages
from uqa_jax.config import blocks
from uqa_jax.config import choices

QUIET = lambda *_: None
GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fingerprints_default.json")


def test_stages_are_modules_chosen_by_name(monkeypatch):
  assert stages.implemented() == list(choices.STAGES)
  for name in choices.STAGES:
    module = stages.get(name)
    assert callable(module.run) and callable(module.fingerprint)
    assert isinstance(module.VERSION, int) and module.VERSION >= 1, name  # every stage declares its own
    assert set(module.UPSTREAM) <= set(choices.STAGES[:choices.STAGES.index(name)])
  monkeypatch.setattr(choices, "STAGES", choices.STAGES + ("serve",))  # listed, no module yet
  with pytest.raises(ValueError, match="stage 'serve' is listed in config.stages but not implemented"):
    stages.get("serve")
  monkeypatch.undo()
  with pytest.raises(ValueError, match="unknown stage 'finetune'; expected one of data, pretrain"):
    stages.get("finetune")
  assert stages.upstream("pretrain") == ["data"]


def test_every_config_file_passes_the_start_up_checks(tmp_path):
  import importlib
  root = os.path.join(ROOT, "configs")
  for name in sorted(f[:-3] for f in os.listdir(root) if f.endswith(".py") and f != "__init__.py"):
    config = importlib.import_module(f"configs.{name}").get_config()
    if config.data.source == "official":  # the paths a user brings
      config.data.path = str(tmp_path)
      config.llm.model = "smollm2"
    stages.check_config(config)
  for encoder in choices.ENCODERS:  # configs/default.py:<encoder>, configs/paper.py:<encoder>
    stages.check_config(default.get_config(encoder))
  from configs import ablations, default_full  # pylint: disable=import-outside-toplevel
  for variant in ablations.VARIANTS:
    stages.check_config(ablations.get_config(variant))
  for variant in default_full.VARIANTS:
    stages.check_config(default_full.get_config(f"{variant}-s1"))


def test_every_default_full_recipe_reports_a_zeros_control_its_verdict_reads():
  """A recipe's verdict reads a zeros run of the same recipe, else of the default one
  (`tables.against`): every experiment that includes a zeros workdir includes such a run."""
  from configs import default_full  # pylint: disable=import-outside-toplevel
  from uqa_jax.config.recipes import AlignConfig  # pylint: disable=import-outside-toplevel
  from uqa_jax.evaluation import evaluator  # pylint: disable=import-outside-toplevel
  recipe = lambda c: evaluator.recipe_suffix(blocks.read(c, AlignConfig), c.data.train_questions)
  checked = 0
  for variant in default_full.VARIANTS:
    config = default_full.get_config(f"{variant}-s0")
    zeros = [w for w in config.report.include if "zeros" in os.path.basename(w)]
    if variant.endswith("zeros") or not zeros:
      continue
    assert len(zeros) == 1, (variant, zeros)
    name = os.path.basename(zeros[0]).removeprefix("default_full-")
    other = default_full.get_config(name)
    assert other.align.user == "zeros", (variant, zeros)
    # its own control (<variant>_zeros; trained's is `zeros`) has its recipe exactly; any other
    # zeros run it reads has the QA-only recipe (no suffix), never another recipe's
    own = {"trained": "zeros-s0"}.get(variant, f"{variant}_zeros-s0")
    want = recipe(config) if name == own else ""
    assert recipe(other) == want, (variant, recipe(config), recipe(other))
    checked += 1
  assert checked >= 8  # trained, qa_only, frozen_llm, contrast, more_data, official, text_start, reconstruct_frozen_llm


def test_default_full_experiments_keep_the_qa_only_recipe_they_were_measured_against():
  from configs import default_full  # pylint: disable=import-outside-toplevel
  trained, qa_only = (default_full.get_config(f"{v}-s0").align.to_dict() for v in ("trained", "qa_only"))
  assert sorted(k for k in trained if trained[k] != qa_only[k]) == ["reconstruct_steps"]
  for variant in default_full.EXPERIMENTS:
    config = default_full.get_config(f"{variant}-s0")
    assert (config.align.reconstruct_steps > 0) == variant.startswith("reconstruct_frozen_llm"), variant
    if not variant.endswith("zeros") and variant != "qa_only":  # a QA-only experiment is compared with qa_only
      assert any(w.endswith(("qa_only-s0", "trained-s0")) for w in config.report.include) or not config.report.include
      assert not any(w.endswith("trained-s0") for w in config.report.include) or config.align.reconstruct_steps, variant


def test_default_full_aligns_trained_and_each_soft_prompt_control_with_one_recipe():
  """A control measures the input, not the recipe: every control that reads soft tokens differs
  from `trained` in align.user (and the oracle's adapter start) alone; text20 has no soft tokens to
  reconstruct from and differs in the reconstruction steps as well."""
  from configs import default_full  # pylint: disable=import-outside-toplevel
  trained = default_full.get_config("trained-s0").align.to_dict()
  assert trained["reconstruct_steps"] > 0  # the recipe adopted on 2026-12-06
  for control in default_full.CONTROLS:
    align = default_full.get_config(f"{control}-s0").align.to_dict()
    differ = sorted(k for k in trained if align[k] != trained[k])
    expected = {"zeros": ["user"], "random_encoder": ["user"], "oracle_titles": ["adapter_init", "user"],
                "text20": ["adapter_init", "reconstruct_steps", "user"]}[control]
    assert differ == expected, (control, differ)


@pytest.mark.parametrize("block,key,valid", [
    ("encoder", "heads", "num_heads"),
    ("pretrain", "lr", "learning_rate"),
    ("data", "num_users", "synthetic"),
    ("data.synthetic", "users", "num_users"),
    ("data.filters", "min_items", "min_item_count"),
    ("input", "batch_size", "bag_sizes"),
    ("llm", "precision", "dtype"),
    ("align", "lr", "llm_learning_rate"),
    ("adapter", "tokens", "num_tokens"),
])
def test_an_unknown_key_is_an_error_naming_it_and_the_valid_keys(block, key, valid):
  config = smoke.get_config()
  config.stages = ("data", "pretrain", "align")  # every block is read
  target = config
  for part in block.split("."):
    target = target[part]
  with target.unlocked():
    target[key] = 1
  with pytest.raises(blocks.ConfigError, match=rf"config {block}: unknown key {key}; valid keys: .*{valid}"):
    stages.check_config(config)


def test_an_unknown_block_and_a_dead_encoder_setting_are_errors():
  config = smoke.get_config()
  with config.unlocked():
    config.evaluation = {"name": "mean"}  # no stage reads it
  with pytest.raises(ValueError, match="unknown top-level key evaluation; valid keys: adapter, align, data"):
    stages.check_config(config)
  config = default.get_config("gru4rec")
  config.encoder.num_heads = 4
  with pytest.raises(blocks.ConfigError, match="config encoder: num_heads=4: not read by gru4rec"):
    stages.check_config(config)


def test_the_paper_setting_names_every_missing_input_path_before_any_work(tmp_path):
  from configs import uqabench
  config = uqabench.get_config()
  config.data.path, config.llm.model = str(tmp_path / "no-data"), str(tmp_path / "no-qwen")
  with pytest.raises(ValueError, match=r"missing inputs:\n  data.path='.*no-data' \(the official data directory\) "
                                       r"does not exist\n  llm.model='.*no-qwen': "):
    stages.check_config(config)
  config.data.path, config.llm.model = str(tmp_path), "smollm2"
  stages.check_config(config)  # both present: no error


def test_stages_must_be_listed_once_in_pipeline_order_and_restart_one_of_them():
  config = smoke.get_config()
  config.stages = ("pretrain", "data")
  with pytest.raises(ValueError, match="in pipeline order data, pretrain"):
    stages.check_config(config)
  config = smoke.get_config()
  config.stages, config.restart = ("pretrain",), "data"
  with pytest.raises(ValueError, match="restart='data': not one of the stages this run runs"):
    stages.check_config(config)


def test_fingerprints_hold_what_changes_results_and_only_that():
  base = stages.fingerprint("pretrain", smoke.get_config())
  same = smoke.get_config()
  same.pretrain.log_every, same.pretrain.checkpoint_every, same.mesh.data = 7, 3, 1
  same.input.max_text_len = 64  # read by the align stage only
  assert stages.fingerprint("pretrain", same) == base
  changed = smoke.get_config()
  changed.pretrain.learning_rate = 0.5
  changed.data.synthetic.num_users = 61
  diff = {k for k in base if stages.fingerprint("pretrain", changed)[k] != base[k]}
  assert diff == {"pretrain.learning_rate", "data.synthetic.num_users"}
  movielens = smoke.get_config()
  movielens.data.source = "movielens"
  other = smoke.get_config()
  other.data.source = "movielens"
  other.data.synthetic.num_users = 61  # the generator is not read for MovieLens
  assert stages.fingerprint("data", movielens) == stages.fingerprint("data", other)


def test_a_field_added_later_keeps_old_workdirs_valid_at_its_old_behaviour():
  """align.adapter_init and input.length_window came after workdirs existed: at "random" / 0 (what
  the code did before) the align fingerprint is the one stored then; other values change it."""
  def config(**fields):
    c = smoke.get_config()
    c.input.length_window = 0  # smoke inherits the demo's 8
    for key, value in fields.items():
      block, name = key.split("__")
      setattr(c[block], name, value)
    return c
  base = stages.fingerprint("align", config())
  assert not any(k.startswith(("align.adapter_init", "align.title_fit_rows", "input.length_window")) for k in base)
  assert stages.fingerprint("align", config(align__adapter_init="titles"))["align.adapter_init"] == "titles"
  assert stages.fingerprint("align", config(align__title_fit_rows=64)) == base  # read only by the titles start
  titles_rows = stages.fingerprint("align", config(align__adapter_init="titles", align__title_fit_rows=64))
  assert titles_rows["align.title_fit_rows"] == 64
  # The row order changes with length_window; the widths' cuts change no number.
  assert set(stages.fingerprint("align", config(input__length_window=8, input__widths=((32, 8),)))) - set(base) \
      == {"input.length_window"}
  assert stages.fingerprint("align", config(input__widths=((32, 8), (64, 16)))) == base


def test_default_workdir_is_named_after_the_config_and_its_argument():
  assert stages.default_workdir("configs/default.py:hstu") == os.path.join("workdir", "default-hstu")
  assert stages.default_workdir("configs/default.py") == os.path.join("workdir", "default")


def test_the_demo_configs_fingerprints_are_the_ones_its_workdirs_were_made_with():
  """Every stage's fingerprint of configs/default.py equals the stored one (written by the code
  before the package redesign): a change here makes every existing demo workdir stale, so it
  must be deliberate, and the stored file is then rewritten with a note saying why."""
  with open(GOLDEN, encoding="utf-8") as f:
    golden = json.load(f)
  config = default.get_config()
  assert set(golden) == set(config.stages)
  for name in config.stages:
    assert stages.fingerprint(name, config) == golden[name], name


def test_a_stage_version_enters_its_fingerprint_and_every_later_ones_only_above_1(monkeypatch):
  config = default.get_config()
  assert not any(k.startswith("code_version.") and k != "code_version.diagnose"
                 for name in config.stages for k in stages.fingerprint(name, config))
  assert stages.fingerprint("diagnose", config)["code_version.diagnose"] == 2
  monkeypatch.setattr(stages.get("pretrain"), "VERSION", 3, raising=False)
  assert "code_version.pretrain" not in stages.fingerprint("data", config)
  for later in ("pretrain", "align", "evaluate", "diagnose"):
    assert stages.fingerprint(later, config)["code_version.pretrain"] == 3, later


def test_per_batch_widths_are_refused_with_several_processes_only_when_the_run_aligns(monkeypatch):
  """Each process would cut its rows to its own longest chat: refused at start-up for a run that
  lists align; a Stage 1 run on several processes is not concerned."""
  from uqa_jax.soft_prompt import program
  config = default.get_config()
  assert config.input.widths
  monkeypatch.setattr(program.jax, "process_count", lambda: 2)
  monkeypatch.setattr(stages, "check_processes", lambda name: "all")  # the stages' own one-process rule aside
  config.stages = ("data", "pretrain")
  stages.check_config(config)
  config.stages = ("data", "pretrain", "align")
  with pytest.raises(blocks.ConfigError, match=r"config input.widths=\(\(48, 16\),\) with 2 processes"):
    stages.check_config(config)
