# Tables, figures and the report, from finished runs only: regenerating them trains nothing.


rule table:
    input:
        unpack(table_inputs),
    output:
        tex=f"{RESULTS}/tables/{{experiment}}.tex",
        md=f"{RESULTS}/tables/{{experiment}}.md",
        html=report(
            f"{RESULTS}/tables/{{experiment}}.html",
            caption="../report/table.rst",
            category=experiment_category,
            subcategory="Tables",
            labels=lambda wildcards: {"table": "ours"},
        ),
        cmp_tex=f"{RESULTS}/tables/{{experiment}}_vs_paper.tex",
        cmp_md=f"{RESULTS}/tables/{{experiment}}_vs_paper.md",
        cmp_html=report(
            f"{RESULTS}/tables/{{experiment}}_vs_paper.html",
            caption="../report/table_vs_paper.rst",
            category=experiment_category,
            subcategory="Tables",
            labels=lambda wildcards: {"table": "beside the published values"},
        ),
    log:
        f"{RESULTS}/logs/report/table_{{experiment}}.log",
    localrule: True
    conda:
        "../../envs/iwae.yaml"
    params:
        layout=lambda wildcards: PLAN.experiments[wildcards.experiment].layout,
        title=lambda wildcards: PLAN.experiments[wildcards.experiment].title,
        out_dir=lambda wildcards, output: os.path.dirname(output.tex),
        reference=lambda wildcards: PLAN.experiments[wildcards.experiment].reference,
    shell:
        "python -m iwae report table --experiment {wildcards.experiment:q} --layout {params.layout:q}"
        " --title {params.title:q} --reference {params.reference:q} --evals {input.evals:q}"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule findings:
    input:
        unpack(table_inputs),
    output:
        tex=f"{RESULTS}/tables/{{experiment}}_findings.tex",
        md=f"{RESULTS}/tables/{{experiment}}_findings.md",
        html=report(
            f"{RESULTS}/tables/{{experiment}}_findings.html",
            caption="../report/table_findings.rst",
            category=experiment_category,
            subcategory="Tables",
            labels=lambda wildcards: {"table": "the findings, judged"},
        ),
    log:
        f"{RESULTS}/logs/report/findings_{{experiment}}.log",
    localrule: True
    conda:
        "../../envs/iwae.yaml"
    params:
        title=lambda wildcards: PLAN.experiments[wildcards.experiment].title,
        out_dir=lambda wildcards, output: os.path.dirname(output.tex),
        reference=lambda wildcards: PLAN.experiments[wildcards.experiment].reference,
    shell:
        "python -m iwae report findings --experiment {wildcards.experiment:q} --title {params.title:q}"
        " --reference {params.reference:q} --evals {input.evals:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


# `snakemake --configfile ... publish`: the finished configuration as results/published/<name>
rule publish_spec:
    output:
        f"{RESULTS}/published.json",
    log:
        f"{RESULTS}/logs/report/published.log",
    localrule: True
    params:
        spec=lambda wildcards: jobs.publish_spec(PLAN),
    run:
        write_text(output[0], f"{params.spec}\n")
        write_text(log[0], f"wrote {output[0]}\n")


rule publish:
    input:
        spec=f"{RESULTS}/published.json",
        done=jobs.final_outputs(PLAN),
    output:
        f"{PUBLISHED}/SHA256SUMS",
    log:
        f"{RESULTS}/logs/report/publish.log",
    localrule: True
    conda:
        "../../envs/iwae.yaml"
    params:
        results=lambda wildcards, input: os.path.dirname(input.spec),
        out=lambda wildcards, output: os.path.dirname(output[0]),
        models="--models" if config.get("publish", {}).get("models") else "",
    shell:
        "python -m iwae publish --results {params.results:q} --out {params.out:q} --spec {input.spec:q} {params.models}"
        " > {log:q} 2>&1"


rule group_figure:
    input:
        unpack(group_inputs),
    output:
        pdf=f"{RESULTS}/figures/{{experiment}}/{{kind}}_{{dataset}}_{{tag}}.pdf",
        png=report(
            f"{RESULTS}/figures/{{experiment}}/{{kind}}_{{dataset}}_{{tag}}.png",
            caption="../report/figure_group.rst",
            category=experiment_category,
            subcategory=figure_subcategory,
            labels=lambda wildcards: {
                "dataset": wildcards.dataset,
                "layers": wildcards.tag,
            },
        ),
    log:
        f"{RESULTS}/logs/report/{{kind}}_{{experiment}}_{{dataset}}_{{tag}}.log",
    wildcard_constraints:
        kind="|".join(FIGURE_KINDS.names("group", "evals")),
    localrule: True
    conda:
        "../../envs/iwae.yaml"
    params:
        stem=lambda wildcards, output: output.pdf.removesuffix(".pdf"),
    shell:
        "python -m iwae report figure {wildcards.kind:q} --evals {input.evals:q} --out-stem {params.stem:q} > {log:q} 2>&1"


rule weights_figure:
    input:
        models=weights_inputs,
    output:
        pdf=f"{RESULTS}/figures/{{experiment}}/weights_{{dataset}}_{{tag}}.pdf",
        png=report(
            f"{RESULTS}/figures/{{experiment}}/weights_{{dataset}}_{{tag}}.png",
            caption="../report/weights.rst",
            category=experiment_category,
            subcategory="Random weights: sigma and |m| / sigma",
            labels=lambda wildcards: {
                "dataset": wildcards.dataset,
                "layers": wildcards.tag,
            },
        ),
    log:
        f"{RESULTS}/logs/report/weights_{{experiment}}_{{dataset}}_{{tag}}.log",
    localrule: True
    conda:
        "../../envs/iwae.yaml"
    params:
        stem=lambda wildcards, output: output.pdf.removesuffix(".pdf"),
    shell:
        "python -m iwae report figure weights --models {input.models:q} --out-stem {params.stem:q} > {log:q} 2>&1"


rule section_figure:
    input:
        evals=section_inputs,
    output:
        pdf=f"{RESULTS}/figures/{{experiment}}/{{kind}}_{{section}}.pdf",
        png=report(
            f"{RESULTS}/figures/{{experiment}}/{{kind}}_{{section}}.png",
            caption="../report/figure_section.rst",
            category=experiment_category,
            subcategory=figure_subcategory,
            labels=lambda wildcards: {"part": wildcards.section},
        ),
    log:
        f"{RESULTS}/logs/report/{{kind}}_{{experiment}}_{{section}}.log",
    wildcard_constraints:
        kind="|".join(FIGURE_KINDS.names("section", "evals")),
        section="[a-z0-9][a-z0-9_-]*",
    localrule: True
    conda:
        "../../envs/iwae.yaml"
    params:
        stem=lambda wildcards, output: output.pdf.removesuffix(".pdf"),
        kind=lambda wildcards: wildcards.kind.replace("_", "-"),
    shell:
        "python -m iwae report figure {params.kind:q} --evals {input.evals:q} --out-stem {params.stem:q} > {log:q} 2>&1"


rule latent_figure:
    input:
        unpack(latent_inputs),
    output:
        pdf=f"{RESULTS}/figures/{{experiment}}/{{kind}}_{{section}}.pdf",
        png=report(
            f"{RESULTS}/figures/{{experiment}}/{{kind}}_{{section}}.png",
            caption="../report/figure_latent.rst",
            category=experiment_category,
            subcategory=figure_subcategory,
            labels=lambda wildcards: {"part": wildcards.section},
        ),
    log:
        f"{RESULTS}/logs/report/{{kind}}_{{experiment}}_{{section}}.log",
    wildcard_constraints:
        kind="|".join(FIGURE_KINDS.names("latent section", "models and data")),
        section="[a-z0-9][a-z0-9_-]*",
    localrule: True
    conda:
        "../../envs/iwae.yaml"
    params:
        stem=lambda wildcards, output: output.pdf.removesuffix(".pdf"),
        kind=lambda wildcards: wildcards.kind.replace("_", "-"),
    shell:
        "python -m iwae report figure {params.kind} --models {input.models} --data {input.data}"
        " --out-stem {params.stem} > {log} 2>&1"


rule run_figure:
    input:
        unpack(run_figure_inputs),
    output:
        pdf=f"{RESULTS}/figures/{{experiment}}/{{kind}}/{{run}}.pdf",
        png=report(
            f"{RESULTS}/figures/{{experiment}}/{{kind}}/{{run}}.png",
            caption="../report/figure_run.rst",
            category=experiment_category,
            subcategory=figure_subcategory,
            labels=lambda wildcards: {"run": wildcards.run},
        ),
    log:
        f"{RESULTS}/logs/report/{{kind}}_{{experiment}}_{{run}}.log",
    wildcard_constraints:
        kind="|".join(FIGURE_KINDS.names("run", "model")),
    localrule: True
    conda:
        "../../envs/iwae.yaml"
    params:
        stem=lambda wildcards, output: output.pdf.removesuffix(".pdf"),
        kind=lambda wildcards: wildcards.kind.replace("_", "-"),
    shell:
        "python -m iwae report figure {params.kind:q} --model {input.model:q} --data {input.data:q} --out-stem {params.stem:q}"
        " > {log:q} 2>&1"


rule experiment_figure:
    input:
        evals=lambda wildcards: evals_of(wildcards.experiment),
    output:
        pdf=f"{RESULTS}/figures/{{experiment}}/{{kind}}.pdf",
        png=report(
            f"{RESULTS}/figures/{{experiment}}/{{kind}}.png",
            caption="../report/figure_experiment.rst",
            category=experiment_category,
            subcategory=figure_subcategory,
            labels=lambda wildcards: {"figure": figure_subcategory(wildcards)},
        ),
    log:
        f"{RESULTS}/logs/report/{{kind}}_{{experiment}}.log",
    wildcard_constraints:
        kind="|".join(FIGURE_KINDS.names("experiment", "evals")),
    localrule: True
    conda:
        "../../envs/iwae.yaml"
    params:
        stem=lambda wildcards, output: output.pdf.removesuffix(".pdf"),
        kind=lambda wildcards: wildcards.kind.replace("_", "-"),
    shell:
        "python -m iwae report figure {params.kind:q} --evals {input.evals:q} --out-stem {params.stem:q} > {log:q} 2>&1"


rule summary:
    input:
        evals=[e for exp in SELECTED for e in evals_of(exp.name)],
    output:
        csv=f"{RESULTS}/tables/summary.csv",
        md=f"{RESULTS}/tables/summary.md",
        html=report(
            f"{RESULTS}/tables/summary.html",
            caption="../report/summary.rst",
            category="All runs",
        ),
        cost_md=f"{RESULTS}/tables/cost.md",
        cost_tex=f"{RESULTS}/tables/cost.tex",
        cost_html=report(
            f"{RESULTS}/tables/cost.html",
            caption="../report/cost.rst",
            category="All runs",
        ),
    log:
        f"{RESULTS}/logs/report/summary.log",
    localrule: True
    conda:
        "../../envs/iwae.yaml"
    shell:
        "python -m iwae report summary --evals {input.evals:q} --out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"


rule report:
    input:
        tables=[t for exp in SELECTED for t in jobs.tables(PLAN, exp)],
        figures=[f for exp in SELECTED for f in jobs.figures(PLAN, exp)],
        summary=f"{RESULTS}/tables/summary.md",
    output:
        f"{RESULTS}/report.tex",
    log:
        f"{RESULTS}/logs/report/report.log",
    localrule: True
    conda:
        "../../envs/iwae.yaml"
    params:
        titles=" ".join(shlex.quote(f"{exp.name}={exp.title}") for exp in SELECTED),
    shell:
        "python -m iwae report document --tables {input.tables:q} --figures {input.figures:q}"
        " --titles {params.titles} --out {output:q} > {log:q} 2>&1"


rule report_pdf:
    input:
        tex=f"{RESULTS}/report.tex",
        tables=[t for exp in SELECTED for t in jobs.tables(PLAN, exp)],
        figures=[f for exp in SELECTED for f in jobs.figures(PLAN, exp)],
    output:
        f"{RESULTS}/report.pdf",
    log:
        f"{RESULTS}/logs/report/report_pdf.log",
    localrule: True
    conda:
        "../../envs/iwae.yaml"
    shell:
        "python -m iwae report pdf --tex {input.tex:q} --out {output:q} > {log:q} 2>&1"
