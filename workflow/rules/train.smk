# Training: one job per run, or with compute.pack one job per pack of runs (iwae.training.packs).
# Checkpoints live beside the outputs but are not declared as outputs, so Snakemake never
# deletes them: a killed or failed job resumes where it stopped. The outputs are flagged
# `update`: a failed job gets the previous model back, never a deleted one.


# the pack file: every run's directory and flags (rewritten when an option changes);
# written here rather than through a shell, whose arguments are limited in length
rule pack_file:
    output:
        paths.pack_file(RESULTS),
    log:
        f"{RESULTS}/logs/packs/{{experiment}}/{{pack}}.log",
    localrule: True
    params:
        spec=pack_spec,
    run:
        write_text(output[0], f"{params.spec}\n")
        write_text(log[0], f"wrote {output[0]}\n")


if not PACKS:

    rule train:
        input:
            unpack(train_inputs),
        output:
            model=update(f"{RUN}/model.pt"),
            record=update(f"{RUN}/train.json"),
            curve=update(f"{RUN}/train_log.csv"),
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
            out=lambda wildcards, output: os.path.dirname(output.model),
            args=lambda wildcards: shell_args(
                jobs.train_flags(PLAN, run_of(wildcards), DEVICE)
            ),
        shell:
            "python -m iwae train --out {params.out:q} {params.args} --threads {threads} > {log:q} 2>&1"

else:

    for pack in PACKS:

        rule:
            name:
                jobs.pack_rule_name(pack)
            input:
                spec=paths.pack_file(RESULTS, pack.experiment, pack.name),
                data=paths.data_file(pack.runs[0].dataset),
                first_stages=jobs.pack_first_stages(PLAN, pack),
            output:
                # flagged `update`: Snakemake neither deletes them before the job nor keeps
                # a failed job's, it restores the previous ones (a failed retrain never loses
                # a finished model)
                [
                    update(jobs.run_file(PLAN, r, f))
                    for r in pack.runs
                    for f in jobs.RUN_OUTPUTS
                ],
            log:
                f"{RESULTS}/logs/train/{pack.experiment}/pack-{pack.name}.log",
            benchmark:
                f"{RESULTS}/benchmarks/train/{pack.experiment}/pack-{pack.name}.tsv"
            conda:
                "../../envs/iwae.yaml"
            threads: THREADS
            resources:
                gpu=GPUS,
                runtime=jobs.pack_resource(
                    config["compute"], pack, "train_runtime_min", GPUS
                ),
                mem_mb=jobs.pack_resource(config["compute"], pack, "train_mem_mb", GPUS),
            shell:
                "python -m iwae train --pack {input.spec:q} --threads {threads} > {log:q} 2>&1"
