# Raw files, verified against their published fingerprints, then one .npz per dataset.

RAW_DATASET = catalogue.raw_file_owners()  # raw file -> the dataset it belongs to


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
        mirror=lambda wildcards: (
            shell_args(["--mirror", config["data"]["mirror"]])
            if config["data"].get("mirror")
            else ""
        ),
        dest=lambda wildcards, output: output[0].removesuffix(wildcards.raw).rstrip("/"),
    shell:
        "python -m iwae fetch {params.dataset:q} --only {wildcards.raw:q} --dest {params.dest:q} {params.mirror} > {log:q} 2>&1"


rule prepare:
    input:
        lambda wildcards: [
            f"{RAW}/{f.name}" for f in catalogue.get(wildcards.dataset).raw_files
        ],
    output:
        paths.data_file(),
    log:
        f"{DATA}/logs/prepare/{{dataset}}.log",
    conda:
        "../../envs/iwae.yaml"
    params:
        raw=RAW,
    shell:
        "python -m iwae prepare {wildcards.dataset:q} --raw {params.raw:q} --out {output:q} > {log:q} 2>&1"
