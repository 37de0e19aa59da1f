"""A harness run over a workdir's checkpoints (one, a list, or all) or a Hugging Face folder."""

import time

from llm_jax.evaluation import load
from llm_jax.evaluation.harness import efficiency
from llm_jax.evaluation.harness import runner


def resolve_steps(workdir: str, steps: str | None) -> list[int | None]:
  """'all' -> every checkpoint step; '100,200' -> those; None/'' -> [None] (the latest)."""
  if not steps:
    return [None]
  available = load.checkpoint_steps(workdir)
  if steps == "all":
    if not available:
      raise FileNotFoundError(f"workdir {workdir!r} has no checkpoint")
    return list(available)
  try:
    wanted = [int(s) for s in steps.split(",") if s.strip()]
  except ValueError as e:
    raise ValueError(f"--steps={steps!r}: expected 'all' or comma-separated integers") from e
  missing = [s for s in wanted if s not in available]
  if missing:
    raise ValueError(f"workdir {workdir!r} has no checkpoint at step(s) {missing}; steps: "
                     f"{available}")
  return wanted


def _one_model(model, params, model_cfg, tokenizer, step, task_names, options, with_efficiency):
  run = {"step": step, **runner.run_tasks(task_names, model, params, model_cfg, tokenizer,
                                          options)}
  if with_efficiency and model_cfg.family in ("decoder", "encoder_decoder"):
    run["efficiency"] = efficiency.measure_efficiency(
        model, params, model_cfg, batch_size=min(options.batch_size, 8))
  return run


def evaluate_suite(task_names, options: runner.HarnessOptions, *, workdir: str | None = None,
                   hf: str | None = None, steps: str | None = None,
                   with_efficiency: bool = True) -> dict:
  """{'model', 'options', 'runs': [{'step', 'tasks', 'efficiency', 'warnings'}]}."""
  if bool(workdir) == bool(hf):
    raise ValueError("give exactly one of workdir or hf")
  start = time.perf_counter()
  runs = []
  if hf:
    if steps:
      raise ValueError("--steps is for --workdir checkpoints, not --hf")
    model, params, model_cfg, tokenizer = load.load_from_hf(hf)
    runs.append(_one_model(model, params, model_cfg, tokenizer, 0, task_names, options,
                           with_efficiency))
  else:
    for step in resolve_steps(workdir, steps):
      model, params, cfg, tokenizer = load.load_from_workdir(workdir, step=step)
      if step is None:
        step = load.checkpoint_steps(workdir)[-1]
      runs.append(_one_model(model, params, cfg.model, tokenizer, step, task_names, options,
                             with_efficiency and not runs))
  return {"model": hf or workdir, "tasks": list(task_names),
          "options": {"num_fewshot": options.num_fewshot, "seed": options.seed,
                      "limit": options.limit, "batch_size": options.batch_size,
                      "chat_template": options.chat_template},
          "seconds": time.perf_counter() - start, "runs": runs}
