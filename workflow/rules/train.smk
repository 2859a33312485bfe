# One training job per run. Checkpoints live beside the outputs but are not declared as
# outputs, so Snakemake never deletes them: a killed or failed job resumes where it stopped.


rule train:
    input:
        unpack(train_inputs),
    output:
        model=f"{RESULTS}/runs/{{experiment}}/{{run}}/model.pt",
        record=f"{RESULTS}/runs/{{experiment}}/{{run}}/train.json",
        curve=f"{RESULTS}/runs/{{experiment}}/{{run}}/train_log.csv",
    log:
        f"{RESULTS}/logs/train/{{experiment}}/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{experiment}}/{{run}}.tsv"
    conda:
        "../../envs/iwae.yaml"
    threads: THREADS
    resources:
        gpu=GPUS,
        runtime=config["compute"]["train_runtime_min"],
        mem_mb=config["compute"]["train_mem_mb"],
    params:
        out=lambda wildcards: run_dir(wildcards.experiment, wildcards.run),
        args=train_args,
    shell:
        "python -m iwae train --out {params.out} --data {input.data} {params.args} --threads {threads} > {log} 2>&1"
