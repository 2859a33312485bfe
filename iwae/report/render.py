"""How a table is written: one `Table` (columns, rows, notes) rendered as LaTeX (booktabs, a
standalone document that compiles on its own), Markdown and HTML, and the number format of
its cells. With several seeds a cell reads "mean ± sd" and the notes give n.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from tabulate import tabulate

from iwae.system.files import write_text

TABLE_BEGIN = "% --- table begins ---"
TABLE_END = "% --- table ends ---"
DASH = "—"


def number(mean: float, sd: float = math.nan, n: int = 1, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return DASH
    if n > 1 and not math.isnan(sd):
        return f"{mean:.{digits}f} ± {sd:.{digits}f}"
    return f"{mean:.{digits}f}"


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    groups: list[list[tuple[str, int]]] = field(default_factory=list)  # spanning headers
    midrules: list[int] = field(default_factory=list)  # row indices preceded by \midrule
    notes: list[str] = field(default_factory=list)
    align: str = ""

    def markdown(self, title: str = "") -> str:
        names = []
        for i, col in enumerate(self.columns):
            parts = [label for group in self.groups for label, start, stop in _spans(group) if start <= i < stop]
            names.append(" ".join([*parts, col]).strip())
        body = tabulate(self.rows, headers=names, tablefmt="pipe", disable_numparse=True)
        out = (f"**{title}**\n\n" if title else "") + body + "\n"
        if self.notes:
            out += "\n" + "\n".join(f"- {n}" for n in self.notes) + "\n"
        return out

    def html(self, title: str = "") -> str:
        """A page of its own (Snakemake's report shows it): the same header groups, rows and
        notes as the LaTeX and Markdown renderings."""
        head = []
        for group in self.groups:
            cells = "".join(
                f'<th colspan="{stop - start}">{escape(label)}</th>' for label, start, stop in _spans(group)
            )
            head.append(f"<tr>{cells}</tr>")
        head.append("<tr>" + "".join(f"<th>{escape(c)}</th>" for c in self.columns) + "</tr>")
        body = []
        for i, row in enumerate(self.rows):
            rule = ' class="rule"' if i in self.midrules and i > 0 else ""
            body.append(f"<tr{rule}>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>")
        notes = "".join(f"<li>{escape(n)}</li>" for n in self.notes)
        style = ("body{font-family:sans-serif;font-size:13px;margin:1em} table{border-collapse:collapse}"
                 " th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
                 " td:first-child,th:first-child{text-align:left} tr.rule td{border-top:2px solid #888}"
                 " th{background:#f3f3f3} ul{color:#444}")  # fmt: skip
        return (
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{style}</style></head><body>\n<h3>{escape(title)}</h3>\n"
            f"<table>\n<thead>{''.join(head)}</thead>\n<tbody>{''.join(body)}</tbody>\n</table>\n"
            f"<ul>{notes}</ul>\n</body></html>\n"
        )

    def latex(self) -> str:
        """A document that compiles on its own (base LaTeX, booktabs, geometry, graphicx);
        the block between the BEGIN/END markers is what the report inlines."""
        align = self.align or "l" * len(self.columns)
        lines = [r"\begin{tabular}{" + align + "}", r"\toprule"]
        for group in self.groups:
            cells, rules = [], []
            for label, start, stop in _spans(group):
                span = stop - start
                cells.append(rf"\multicolumn{{{span}}}{{c}}{{{_tex(label)}}}" if span > 1 else _tex(label))
                if label:
                    rules.append(rf"\cmidrule(lr){{{start + 1}-{stop}}}")
            lines.append(" & ".join(cells) + r" \\")
            lines.append(" ".join(rules))
        lines.append(" & ".join(_tex(c) for c in self.columns) + r" \\")
        lines.append(r"\midrule")
        for i, row in enumerate(self.rows):
            if i in self.midrules and i > 0:
                lines.append(r"\midrule")
            lines.append(" & ".join(_tex(c) for c in row) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        block = [
            TABLE_BEGIN,
            r"\begin{center}",
            r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
            *lines,
            r"}",
            r"\end{center}",
        ]
        if self.notes:
            block += [r"{\footnotesize\setlength{\parindent}{0pt}"] + [_tex(n) + r"\par" for n in self.notes] + ["}"]
        block.append(TABLE_END)
        preamble = [
            r"\documentclass{article}",
            r"\usepackage[landscape,margin=1.5cm]{geometry}",
            r"\usepackage{booktabs,amsmath,graphicx}",
            r"\pagestyle{empty}",
            r"\begin{document}",
        ]
        return "\n".join(preamble + block + [r"\end{document}", ""])

    def write(self, stem: Path, title: str = "") -> None:
        write_text(Path(f"{stem}.tex"), self.latex())
        write_text(Path(f"{stem}.md"), self.markdown(title))
        write_text(Path(f"{stem}.html"), self.html(title))


def _spans(group: list[tuple[str, int]]):
    start = 0
    for label, span in group:
        yield label, start, start + span
        start += span


def _tex(text: str) -> str:
    text = re.sub(r"(−?)L_k", lambda m: f"${'-' if m.group(1) else ''}L_k$", str(text))
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("^", r"\^{}")):
        text = text.replace(a, b)
    for a, b in (
        ("±", r"$\pm$"), ("—", "---"), ("–", "--"), ("→", r"$\to$"), ("β", r"$\beta$"), ("−", "$-$"),
        ("†", r"$^\dagger$"), ("‡", r"$^\ddagger$"), ("≠", r"$\neq$"), ("‖", r"$\|$"), ("p̂", r"$\hat{p}$"), ("×", r"$\times$"), ("ö", r"\"{o}"),
        ("·", r"$\cdot$"), ("√", r"$\surd$"),
    ):  # fmt: skip
        text = text.replace(a, b)
    if not text.isascii():
        raise ValueError(f"no LaTeX spelling for a character in {text!r}")
    return text
