"""<results>/report.tex: every table and figure of the built experiments in one document,
compiled to PDF when pdflatex or tectonic is on PATH."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from iwae.errors import UserError
from iwae.plan.experiments import default_title
from iwae.plan.figures import KINDS
from iwae.report.render import TABLE_BEGIN, TABLE_END
from iwae.system.files import atomic_path, write_text
from iwae.system.provenance import git_revision


def _table_block(tex_path: Path) -> str:
    """The table and its notes from a table document (each compiles on its own)."""
    text = Path(tex_path).read_text()
    match = re.search(re.escape(TABLE_BEGIN) + "(.*)" + re.escape(TABLE_END), text, re.S)
    if not match:
        raise UserError(f"{tex_path}: not a table written by `iwae report table`")
    return match.group(1).strip()


def _tex(text: str) -> str:
    return text.replace("_", r"\_").replace("&", r"\&")


def build(tables: list[Path], figures: list[Path], out: Path, titles: dict[str, str] | None = None) -> str:
    """Write report.tex from the tables (results/tables/<experiment>[_vs_paper|_findings].tex) and the
    figures (results/figures/<experiment>/...pdf) given, one section per experiment titled as
    `titles` says; paths are made relative to `out`."""
    out = Path(out)
    titles = titles or {}
    experiments: dict[str, dict] = {}
    for t in tables:
        if Path(t).suffix != ".tex":  # the Markdown renderings travel alongside
            continue
        name = Path(t).stem
        base = name.removesuffix("_vs_paper").removesuffix("_findings")
        if base == "summary":
            continue
        experiments.setdefault(base, {"tables": [], "figures": [], "samples": []})["tables"].append(Path(t))
    for f in figures:
        f = Path(f)
        if f.suffix != ".pdf":
            continue
        figure_kind = KINDS.get(f.parent.name)  # a per-run figure: figures/<experiment>/<kind>/<run>.pdf
        per_run = figure_kind is not None and figure_kind.per == "run"
        exp = f.parent.parent.name if per_run else f.parent.name
        place = "samples" if per_run and not figure_kind.wide else "figures"  # in a grid, or at full width
        experiments.setdefault(exp, {"tables": [], "figures": [], "samples": []})[place].append(f)
    rev = git_revision()
    lines = [
        r"\documentclass[10pt]{article}",
        r"\usepackage[margin=1.8cm]{geometry}",
        r"\usepackage{booktabs,amsmath,graphicx}",
        r"\title{Importance Weighted Autoencoders: reproduction report}",
        rf"\date{{{time.strftime('%Y-%m-%d')}, revision {_tex(str(rev['revision'])[:12])}}}",
        r"\begin{document}",
        r"\maketitle",
        r"Every number below comes from a run record (\texttt{runs/<experiment>/<run>/eval.json} beside this report) "
        r"that holds the configuration, seed, library versions, device, wall times and git revision "
        r"behind it; \texttt{tables/summary.csv} lists them all.",
    ]
    for exp, parts in experiments.items():
        lines += [
            rf"\section{{{_tex(titles.get(exp) or default_title(exp))}}}",
            rf"Experiment \texttt{{{_tex(exp)}}}.",
            "",
        ]
        for t in sorted(parts["tables"], key=lambda p: (p.stem.endswith("_findings"), p.stem.endswith("_vs_paper"))):
            if t.stem.endswith("_vs_paper"):
                lines.append(r"\subsection*{Compared with the published values}")
            elif t.stem.endswith("_findings"):
                lines.append(r"\subsection*{The findings, judged from the records}")
            lines += [_table_block(t), ""]
        for f in sorted(parts["figures"]):
            lines += [r"\begin{center}", rf"\includegraphics[width=0.9\linewidth]{{{_rel(f, out)}}}", r"\end{center}"]
        if parts["samples"]:
            lines.append(r"\subsection*{Per run: samples, reconstructions, latent spaces, posteriors}")
            for f in sorted(parts["samples"]):
                lines += [rf"\includegraphics[width=0.49\linewidth]{{{_rel(f, out)}}}"]
        lines.append(r"\clearpage")
    lines += [r"\end{document}", ""]
    text = "\n".join(lines)
    write_text(out, text)
    return text


def _rel(path: Path, out: Path) -> str:
    return str(Path(path).resolve().relative_to(Path(out).resolve().parent))


def latex_engine() -> str | None:
    return shutil.which("tectonic") or shutil.which("pdflatex")


def compile_pdf(tex: Path, pdf: Path) -> None:
    engine = latex_engine()
    if engine is None:
        raise UserError("no LaTeX engine (pdflatex or tectonic) on PATH to compile the report")
    tex = Path(tex).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        if Path(engine).name == "tectonic":
            cmd = [engine, "--outdir", tmp, str(tex)]
        else:
            cmd = [engine, "-interaction=nonstopmode", "-halt-on-error", f"-output-directory={tmp}", str(tex)]
        result = subprocess.run(cmd, cwd=tex.parent, capture_output=True, text=True, timeout=600)
        built = Path(tmp) / (tex.stem + ".pdf")
        if result.returncode != 0 or not built.exists():
            tail = " | ".join(line for line in result.stdout.splitlines()[-8:] if line.strip())
            raise UserError(f"{tex}: {Path(engine).name} failed: {tail}")
        with atomic_path(pdf, suffix=".pdf") as part:
            shutil.copyfile(built, part)


QUOTE = re.compile(r"(<!-- quote (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- /quote -->)", re.S)


def quoted(text: str, root: Path) -> str:
    """`text` (the README) with every block between `<!-- quote PATH -->` and `<!-- /quote -->`
    replaced by the file PATH (relative to `root`) as it is now: the README quotes published
    tables and findings verbatim, never restates them."""

    def body(match: re.Match) -> str:
        path = Path(root) / match["path"]
        if not path.is_file():
            raise UserError(f"{path}: quoted in the README but not there")
        return match.group(1) + path.read_text().rstrip("\n") + "\n" + match.group(4)

    return QUOTE.sub(body, text)


def refresh_quotes(readme: Path) -> bool:
    """Rewrite the README's quoted blocks from their files; whether anything changed."""
    readme = Path(readme)
    text = readme.read_text()
    new = quoted(text, readme.parent)
    if new != text:
        write_text(readme, new)
    return new != text
