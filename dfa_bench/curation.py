"""Which curated runs (results/sweeps/) are what their Makefile target would produce now.

`dfa-bench-tables --check` (and the tests, on the committed results):
1. finds the Makefile's sweep targets: every target whose recipe runs `dfa-bench -m ...
   hydra.sweep.dir=results/sweeps/<name>`; `make -n <target>` gives its commands with variables expanded;
2. expands each command's sweep (comma-separated values, as Hydra's basic sweeper does) into its jobs and
   composes each job's config from today's conf/ (Hydra's compose API): its config identity
   (`dfa_bench.identity.config_id`) and seed;
3. reads every run folder under results/sweeps/ and reports
   - `orphan`: a folder that no target writes;
   - `stale`: a run whose config (from its config.yaml) is not one its target produces now, with the keys
     that differ from the closest job of the target;
   - `unfinished`: a run that failed or was interrupted;
   and, as a note that does not fail the check, `missing`: a job of a target with no run committed (a target
   whose runs need a GPU or the full data sets, or one not run yet).
Exit code 1 when a stale, orphan or unfinished run is reported, 0 when every committed run is current.
"""
from __future__ import annotations

import itertools
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from dfa_bench import identity

SWEEP_DIR = re.compile(r"hydra\.sweep\.dir=(results/sweeps/[^\s\\]+)")


@dataclass
class Job:
    target: str
    folder: str
    overrides: list[str]
    config: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int]:
        return identity.config_id(self.config), int(self.config["seed"])


def sweep_targets(makefile: Path) -> list[str]:
    """Targets whose recipe writes into results/sweeps/."""
    targets, current = [], None
    for line in makefile.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+):(?!=)", line)
        if m:
            current = m.group(1)
        elif line.startswith("\t") and current and SWEEP_DIR.search(line) and current not in targets:
            targets.append(current)
    return targets


def target_commands(target: str, root: Path) -> list[list[str]]:
    """The dfa-bench -m commands of `make -n target`, as argument lists after `-m`."""
    out = subprocess.run(["make", "-n", "-s", target], cwd=root, capture_output=True, text=True, check=True).stdout
    commands = []
    for line in out.replace("\\\n", " ").splitlines():
        words = shlex.split(line)
        if words and words[0].endswith("dfa-bench") and "-m" in words:
            commands.append(words[words.index("-m") + 1:])
    return commands


def expand(overrides: list[str]) -> list[list[str]]:
    """The jobs of one sweep command (Hydra's basic sweeper: the cartesian product of comma lists)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for text, o in zip(overrides, parsed):
        if o.is_sweep_override():
            choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([text])
    return [list(job) for job in itertools.product(*choices)]


def _sweeper_params(overrides: list[str]) -> list[str]:
    """The sweep an experiment file declares (`hydra.sweeper.params`), for the keys the command leaves."""
    from hydra import compose
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [text for text, o in zip(overrides, parsed) if not o.is_sweep_override()]
    cfg = compose(config_name="config", overrides=fixed, return_hydra_config=True)
    given = {o.get_key_element() for o in parsed}
    return [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items() if k not in given]


def target_jobs(root: Path) -> list[Job]:
    from hydra import compose, initialize_config_dir

    jobs = []
    with initialize_config_dir(config_dir=str((root / "conf").resolve()), version_base="1.3"):
        for target in sweep_targets(root / "Makefile"):
            for command in target_commands(target, root):
                folder = next(o.split("=", 1)[1] for o in command if o.startswith("hydra.sweep.dir="))
                overrides = [o for o in command if not o.startswith("hydra.")]
                for job in expand(overrides + _sweeper_params(overrides)):
                    cfg = compose(config_name="config", overrides=job)
                    jobs.append(Job(target, folder, job, OmegaConf.to_container(cfg, resolve=True)))
    return jobs


def check(root: Path, curated: Path) -> list[str]:
    """One line per problem or note (see the module docstring); a line starting with `missing` is a note."""
    jobs = target_jobs(root)
    by_folder: dict[str, list[Job]] = {}
    for job in jobs:
        by_folder.setdefault(job.folder, []).append(job)
    problems, found = [], set()
    for summary_path in sorted(Path(curated).rglob("summary.json")):
        run_dir = summary_path.parent
        if any(p.startswith("replaced-") for p in run_dir.parts):
            continue
        folder = _folder_of(run_dir, root, by_folder)
        if folder is None:
            problems.append(f"orphan      {run_dir}: no Makefile target writes this folder")
            continue
        status = json.loads(summary_path.read_text()).get("status")
        config_path = run_dir / "config.yaml"
        config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=False) if config_path.exists() else {}
        key = (identity.config_id(config), int(config.get("seed", -1)))
        targets = by_folder[folder]
        if status not in ("completed", "diverged"):
            problems.append(f"unfinished  {run_dir}: status {status}")
        elif key not in {j.key for j in targets}:
            closest = min(targets, key=lambda j: len(identity.differing_keys(j.config, config, identity.RUN_LOCAL)))
            differs = identity.differing_keys(closest.config, config, identity.RUN_LOCAL)
            problems.append(f"stale       {run_dir}: `make {closest.target}` now makes another config "
                            f"({', '.join(differs[:6])}{' ...' if len(differs) > 6 else ''} differ)")
        else:
            found.add((folder, *key))
    for job in jobs:
        if (job.folder, *job.key) not in found:
            problems.append(f"missing     {job.folder}: `make {job.target}` job {' '.join(job.overrides)} has no run")
    return problems


def _folder_of(run_dir: Path, root: Path, by_folder: dict[str, list[Job]]) -> str | None:
    try:
        rel = run_dir.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    for folder in by_folder:
        if rel.parts[: len(Path(folder).parts)] == Path(folder).parts:
            return folder
    return None


def main(curated: Path, root: Path = Path(".")) -> int:
    if not (root / "Makefile").exists():
        print("dfa-bench-tables --check: run it from the project's root (where the Makefile is)", file=sys.stderr)
        return 2
    lines = check(root, curated)
    for line in lines:
        print(line)
    problems = [line for line in lines if not line.startswith("missing")]
    print(f"dfa-bench-tables --check: {len(problems)} problem(s) in {curated}, {len(lines) - len(problems)} "
          "job(s) of the Makefile's targets with no committed run", file=sys.stderr)
    return 1 if problems else 0
