# Raw files, verified against their published fingerprints, then one .npz per dataset.


rule fetch:
    output:
        f"{RAW}/{{raw}}",
    log:
        f"{RESULTS}/logs/fetch/{{raw}}.log",
    wildcard_constraints:
        raw="|".join(map(re.escape, RAW_DATASET)),
    conda:
        "../../envs/iwae.yaml"
    params:
        dataset=lambda wildcards: RAW_DATASET[wildcards.raw],
        mirror=mirror_arg,
        dest=lambda wildcards, output: output[0].removesuffix(wildcards.raw).rstrip("/"),
    shell:
        "python -m iwae fetch {params.dataset} --only {wildcards.raw} --dest {params.dest} {params.mirror} > {log} 2>&1"


rule prepare:
    input:
        raw_inputs,
    output:
        f"{RESULTS}/data/{{dataset}}.npz",
    log:
        f"{RESULTS}/logs/prepare/{{dataset}}.log",
    conda:
        "../../envs/iwae.yaml"
    params:
        raw=RAW,
    shell:
        "python -m iwae prepare {wildcards.dataset} --raw {params.raw} --out {output} > {log} 2>&1"
