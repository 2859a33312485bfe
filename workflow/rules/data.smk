# Raw files, verified against their published fingerprints, then one .npz per dataset.


rule fetch:
    output:
        f"{RAW}/{{raw}}",
    log:
        f"{DATA}/logs/fetch/{{raw}}.log",
    wildcard_constraints:
        raw="|".join(map(re.escape, RAW_DATASET)),
    localrule: True
    conda:
        "../../envs/iwae.yaml"
    params:
        dataset=lambda wildcards: RAW_DATASET[wildcards.raw],
        mirror=mirror_arg,
        dest=lambda wildcards, output: output[0].removesuffix(wildcards.raw).rstrip("/"),
    shell:
        "python -m iwae fetch {params.dataset:q} --only {wildcards.raw:q} --dest {params.dest:q} {params.mirror} > {log:q} 2>&1"


rule prepare:
    input:
        raw_inputs,
    output:
        f"{DATA}/{{dataset}}.npz",
    log:
        f"{DATA}/logs/prepare/{{dataset}}.log",
    conda:
        "../../envs/iwae.yaml"
    params:
        raw=RAW,
    shell:
        "python -m iwae prepare {wildcards.dataset:q} --raw {params.raw:q} --out {output:q} > {log:q} 2>&1"
