# The k = 5000 log-likelihood estimate and the active units of every run.


rule evaluate:
    input:
        model=f"{RUN}/model.pt",
        data=lambda wildcards: paths.data_file(run_of(wildcards).dataset),
    output:
        f"{RUN}/eval.json",
    log:
        f"{RESULTS}/logs/evaluate/{{experiment}}/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{experiment}}/{{run}}.tsv"
    conda:
        "../../envs/iwae.yaml"
    threads: THREADS
    resources:
        gpu=GPUS,
        runtime=config["compute"]["evaluate_runtime_min"],
        mem_mb=config["compute"]["evaluate_mem_mb"],
    params:
        run=lambda wildcards, output: os.path.dirname(output[0]),
        args=lambda wildcards: shell_args(jobs.eval_flags(run_of(wildcards), DEVICE)),
    shell:
        "python -m iwae evaluate --run {params.run:q} --model {input.model:q} --data {input.data:q} --out {output:q}"
        " {params.args} --threads {threads} > {log:q} 2>&1"
