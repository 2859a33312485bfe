# Training: one job per run, or with compute.pack one job per pack of runs (iwae.training.packs).
# Checkpoints live beside the outputs but are not declared as outputs, so Snakemake never
# deletes them: a killed or failed job resumes where it stopped. The outputs are flagged
# `update`: a failed job gets the previous model back, never a deleted one.


# the pack file: every run's directory and flags (rewritten when an option changes);
# written here rather than through a shell, whose arguments are limited in length
rule pack_file:
    output:
        f"{RESULTS}/packs/{{experiment}}/{{pack}}.json",
    log:
        f"{RESULTS}/logs/packs/{{experiment}}/{{pack}}.log",
    localrule: True
    params:
        spec=lambda wildcards: pack_spec(wildcards.experiment, wildcards.pack),
    run:
        write_text(output[0], f"{params.spec}\n")
        write_text(log[0], f"wrote {output[0]}\n")


if not PACKS:

    rule train:
        input:
            unpack(train_inputs),
        output:
            model=update(f"{RESULTS}/runs/{{experiment}}/{{run}}/model.pt"),
            record=update(f"{RESULTS}/runs/{{experiment}}/{{run}}/train.json"),
            curve=update(f"{RESULTS}/runs/{{experiment}}/{{run}}/train_log.csv"),
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
            "python -m iwae train --out {params.out:q} {params.args} --threads {threads} > {log:q} 2>&1"

else:

    for pack in PACKS:

        rule:
            name:
                pack_rule_name(pack)
            input:
                spec=pack_file(pack),
                data=data_file(pack.runs[0].dataset),
                first_stages=pack_first_stages(pack),
            output:
                [f for r in pack.runs for f in run_outputs(r)],
            log:
                f"{RESULTS}/logs/train/{pack.experiment}/pack-{pack.name}.log",
            benchmark:
                f"{RESULTS}/benchmarks/train/{pack.experiment}/pack-{pack.name}.tsv"
            conda:
                "../../envs/iwae.yaml"
            threads: THREADS
            resources:
                gpu=GPUS,
                runtime=pack_resource(pack, "train_runtime_min"),
                mem_mb=pack_resource(pack, "train_mem_mb"),
            shell:
                "python -m iwae train --pack {input.spec:q} --threads {threads} > {log:q} 2>&1"
