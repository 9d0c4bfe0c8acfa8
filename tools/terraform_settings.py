"""One environment's Terraform settings, in one file that the first deploy and CI both read.

    python -m tools.terraform_settings check build/environment.tfvars [--project <id>]

Each project keeps its settings (every variable of terraform/variables.tf) in
gs://<project>-tfstate/environment.tfvars, written from terraform/environments/example.tfvars
by the first deploy (docs/guides/deploy.md) and downloaded by cloudbuild.yaml to
build/environment.tfvars
before `terraform plan -var-file=../build/environment.tfvars`. Nothing else sets a variable,
except the few the build itself decides (CI_VARIABLES), so a CI deploy applies exactly what
the operator chose and never falls back to a default.

`check` refuses a file that leaves out a variable (one added to variables.tf since the file
was written: add it), names one that does not exist (a typo), sets one the build decides, or
names another project than the build's.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TERRAFORM = ROOT / "terraform"
EXAMPLE = TERRAFORM / "environments" / "example.tfvars"

# Where an environment's file lives: the object in its state bucket, and the copy a deploy
# reads (from the repository's root), named to terraform (run in terraform/) as VAR_FILE_ARG.
BUCKET_OBJECT = "environment.tfvars"
LOCAL_COPY = "build/environment.tfvars"
VAR_FILE_ARG = f"-var-file=../{LOCAL_COPY}"

# Variables the build decides (cloudbuild.yaml passes them), never an environment's file.
CI_VARIABLES = {"bundles_dir": "../build/bundles"}

_VARIABLE = re.compile(r'^variable\s+"([A-Za-z_][A-Za-z0-9_-]*)"', re.MULTILINE)
# A top-level assignment: `terraform fmt` indents whatever is nested inside a value.
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)\s*=", re.MULTILINE)
_PROJECT = re.compile(r'^project_id\s*=\s*"([^"]*)"', re.MULTILINE)


def bucket_url(project: str) -> str:
    """gs://<project>-tfstate/environment.tfvars: the state bucket made once by hand."""
    return f"gs://{project}-tfstate/{BUCKET_OBJECT}"


def declared(directory: Path = TERRAFORM) -> set[str]:
    """Every variable the configuration declares."""
    return {name for path in directory.glob("*.tf") for name in _VARIABLE.findall(path.read_text())}


def assigned(text: str) -> set[str]:
    """The variables a .tfvars file sets."""
    return set(_ASSIGNMENT.findall(text))


def problems(text: str, project: str | None = None, directory: Path = TERRAFORM) -> list[str]:
    """What is wrong with an environment's file, in words; empty when nothing is."""
    variables = declared(directory)
    names = assigned(text)
    found: list[str] = []
    missing = sorted(variables - set(CI_VARIABLES) - names)
    if missing:
        found.append(
            f"sets no {', '.join(missing)}: add them (terraform/environments/example.tfvars "
            "says what each is), or the deploy would use defaults nobody chose"
        )
    unknown = sorted(names - variables)
    if unknown:
        found.append(f"sets {', '.join(unknown)}, which terraform/variables.tf does not declare")
    ours = sorted(names & set(CI_VARIABLES))
    if ours:
        found.append(f"sets {', '.join(ours)}, which the build decides: remove them")
    if project is not None:
        match = _PROJECT.search(text)
        if not match or match.group(1) != project:
            named = match.group(1) if match else "none"
            found.append(f"is for project {named}, not {project}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.terraform_settings",
        description="Check an environment's Terraform settings file before a deploy.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="exit 1 unless the file sets every variable")
    check.add_argument("file", type=Path)
    check.add_argument("--project", help="the project the file must name")
    args = parser.parse_args(argv)
    if not args.file.is_file():
        where = "docs/guides/deploy.md's first deploy writes it"
        print(f"{args.file}: no such file ({where})", file=sys.stderr)
        return 1
    found = problems(args.file.read_text(), args.project)
    for problem in found:
        print(f"{args.file} {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
