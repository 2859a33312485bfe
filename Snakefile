# Reproduction of Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders" (ICLR 2016).
#
#   snakemake --cores N --resources gpu=1              # the paper's protocol (config.yaml)
#   snakemake --cores 2 --configfile presets/quick.yaml  # every table on a 2-core CPU
#   snakemake --workflow-profile profiles/slurm          # the same DAG on a Slurm cluster
#
# The Snakefile orchestrates; all computation is `python -m iwae <verb>` (the iwae package).


configfile: os.path.join(workflow.basedir, "config.yaml")


# snakemake --report results/report.html: every table and figure with its caption, by experiment
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


if not REPORT_ONLY:  # report_only: tables and figures from finished runs, nothing else

    include: "workflow/rules/data.smk"
    include: "workflow/rules/train.smk"
    include: "workflow/rules/evaluate.smk"


include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        jobs.final_outputs(PLAN),
