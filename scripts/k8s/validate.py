"""Render deploy/'s kustomization and validate every object it produces.

Run by scripts/validate-manifests.sh inside .cache/venv-k8s (kubernetes-validate installed).

1. Rendering. No kustomize binary is needed: this renders the subset of kustomize that
   deploy/kustomization.yaml uses (resources, namespace, labels, configMapGenerator with
   envs/files/literals, replicas, images, replacements) the way kustomize does, except the
   generated ConfigMaps keep their plain names (no content hash suffix). Any other
   kustomization field is an error, so a new feature cannot go unvalidated.
2. Schemas. Every object is validated against the Kubernetes JSON schemas of the pinned
   version in strict mode (unknown fields are errors), with kubernetes-validate.
3. References. What the schemas cannot see: every ConfigMap, Secret-free volume, PVC,
   ServiceAccount, Role and Service an object names exists in the output; a Service selects
   some pod template; a StatefulSet's serviceName is a headless Service; every `$(VAR)` in a
   container's command, args and env is defined for that container; the Ignite XML is
   well-formed and the kfcache config is TOML.

Exit status 0 when everything is valid; otherwise 1 with one line per problem.
"""

import argparse
import copy
import os
import re
import sys
import tomllib
import xml.etree.ElementTree as ElementTree

import kubernetes_validate
import yaml

SUPPORTED = {
    "apiVersion",
    "kind",
    "namespace",
    "labels",
    "resources",
    "configMapGenerator",
    "replicas",
    "images",
    "replacements",
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "CustomResourceDefinition",
}
POD_TEMPLATE_PATHS = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class Problems:
    def __init__(self):
        self.lines = []

    def add(self, where, message):
        self.lines.append(f"{where}: {message}")


def load_yaml_documents(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def read_env_file(path):
    data = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep or not key:
                raise ValueError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
            data[key] = value
    return data


def generate_config_maps(base, generators):
    maps = []
    for generator in generators:
        unknown = set(generator) - {"name", "envs", "files", "literals", "options"}
        if unknown:
            raise ValueError(f"configMapGenerator {generator.get('name')}: unsupported {sorted(unknown)}")
        data = {}
        for env in generator.get("envs", []):
            data.update(read_env_file(os.path.join(base, env)))
        for entry in generator.get("files", []):
            key, sep, path = entry.partition("=")
            if not sep:
                key, path = os.path.basename(entry), entry
            with open(os.path.join(base, path), encoding="utf-8") as f:
                data[key] = f.read()
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        maps.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )
    return maps


def split_path(field_path):
    """`a.b.[name=x].c` -> ['a', 'b', ('name', 'x'), 'c']."""
    parts = []
    for part in re.findall(r"\[[^\]]*\]|[^.]+", field_path):
        if part.startswith("["):
            key, _, value = part[1:-1].partition("=")
            parts.append((key, value))
        else:
            parts.append(part)
    return parts


def get_path(obj, parts):
    for part in parts:
        if isinstance(part, tuple):
            obj = next((i for i in obj if isinstance(i, dict) and i.get(part[0]) == part[1]), None)
        else:
            obj = obj.get(part) if isinstance(obj, dict) else None
        if obj is None:
            return None
    return obj


def set_path(obj, parts, value):
    for i, part in enumerate(parts[:-1]):
        if isinstance(part, tuple):
            obj = next((e for e in obj if isinstance(e, dict) and e.get(part[0]) == part[1]), None)
        else:
            obj = obj.setdefault(part, {}) if isinstance(parts[i + 1], str) else obj.get(part)
        if obj is None:
            return False
    obj[parts[-1]] = value
    return True


def find(objects, kind, name):
    return next(
        (o for o in objects if o["kind"] == kind and o["metadata"].get("name") == name), None
    )


def pod_specs(obj):
    path = POD_TEMPLATE_PATHS.get(obj["kind"])
    if path is None:
        return []
    template = get_path(obj, list(path))
    return [template] if isinstance(template, dict) else []


def render(kustomization_path):
    base = os.path.dirname(os.path.abspath(kustomization_path))
    with open(kustomization_path, encoding="utf-8") as f:
        kustomization = yaml.safe_load(f)
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(
            f"{kustomization_path}: fields {sorted(unknown)} are not supported by "
            "scripts/k8s/validate.py; teach it to render them"
        )
    objects = []
    for resource in kustomization.get("resources", []):
        path = os.path.join(base, resource)
        if not os.path.isfile(path):
            raise ValueError(f"{kustomization_path}: resource {resource} does not exist")
        for document in load_yaml_documents(path):
            document.setdefault("metadata", {})
            objects.append((resource, document))
    for generated in generate_config_maps(base, kustomization.get("configMapGenerator", [])):
        objects.append(("configMapGenerator", generated))

    namespace = kustomization.get("namespace")
    for _, obj in objects:
        if namespace and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace
        if obj["kind"] == "Namespace" and namespace and obj["metadata"].get("name") != namespace:
            raise ValueError(f"Namespace {obj['metadata'].get('name')} differs from {namespace}")
        if obj["kind"] in ("RoleBinding", "ClusterRoleBinding") and namespace:
            for subject in obj.get("subjects", []):
                if subject.get("kind") == "ServiceAccount":
                    subject.setdefault("namespace", namespace)
        for entry in kustomization.get("labels", []):
            obj["metadata"].setdefault("labels", {}).update(entry.get("pairs", {}))
            if entry.get("includeSelectors") or entry.get("includeTemplates"):
                raise ValueError("labels with includeSelectors/includeTemplates are not supported")

    plain = [o for _, o in objects]
    for replica in kustomization.get("replicas", []):
        targets = [o for o in plain if o["metadata"].get("name") == replica["name"] and "replicas" in o.get("spec", {})]
        if not targets:
            raise ValueError(f"replicas: nothing named {replica['name']} has spec.replicas")
        for target in targets:
            target["spec"]["replicas"] = replica["count"]

    for image in kustomization.get("images", []):
        matched = False
        for obj in plain:
            for template in pod_specs(obj):
                spec = template.get("spec", {})
                for container in spec.get("containers", []) + spec.get("initContainers", []):
                    name = re.split(r"[:@]", container.get("image", ""), maxsplit=1)[0]
                    if name == image["name"]:
                        new = image.get("newName", name)
                        if "newTag" in image:
                            new += ":" + str(image["newTag"])
                        if "digest" in image:
                            new += "@" + image["digest"]
                        container["image"] = new
                        matched = True
        if not matched:
            raise ValueError(f"images: no container uses image {image['name']}")

    for replacement in kustomization.get("replacements", []):
        source = replacement["source"]
        source_obj = find(plain, source["kind"], source["name"])
        if source_obj is None:
            raise ValueError(f"replacements: no source {source['kind']}/{source['name']}")
        value = get_path(source_obj, split_path(source["fieldPath"]))
        if value is None:
            raise ValueError(f"replacements: {source['kind']}/{source['name']} has no {source['fieldPath']}")
        for target in replacement["targets"]:
            select = target["select"]
            target_obj = find(plain, select["kind"], select["name"])
            if target_obj is None:
                raise ValueError(f"replacements: no target {select['kind']}/{select['name']}")
            for field_path in target["fieldPaths"]:
                if not set_path(target_obj, split_path(field_path), copy.deepcopy(value)):
                    raise ValueError(f"replacements: {select['kind']}/{select['name']} has no {field_path}")
    return objects


def check_references(objects, problems):
    plain = [o for _, o in objects]
    names = {(o["kind"], o["metadata"].get("name")) for o in plain}

    def need(where, kind, name):
        if (kind, name) not in names:
            problems.add(where, f"refers to {kind} {name!r}, which is not in the output")

    for source, obj in objects:
        where = f"{source}: {obj['kind']}/{obj['metadata'].get('name')}"
        if obj["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            need(where, obj["roleRef"]["kind"], obj["roleRef"]["name"])
            for subject in obj.get("subjects", []):
                if subject.get("kind") == "ServiceAccount":
                    need(where, "ServiceAccount", subject["name"])
        if obj["kind"] == "StatefulSet":
            service = find(plain, "Service", obj["spec"].get("serviceName"))
            if service is None or service["spec"].get("clusterIP") != "None":
                problems.add(where, f"serviceName {obj['spec'].get('serviceName')!r} is not a headless Service")
        if obj["kind"] == "Service":
            selector = obj["spec"].get("selector", {})
            if not any(
                selector.items() <= template.get("metadata", {}).get("labels", {}).items()
                for other in plain
                for template in pod_specs(other)
            ):
                problems.add(where, f"selector {selector} matches no pod template")
        for template in pod_specs(obj):
            spec = template.get("spec", {})
            if "serviceAccountName" in spec:
                need(where, "ServiceAccount", spec["serviceAccountName"])
            for volume in spec.get("volumes", []):
                if "configMap" in volume:
                    need(where, "ConfigMap", volume["configMap"]["name"])
                if "persistentVolumeClaim" in volume:
                    need(where, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                defined = set()
                for env_from in container.get("envFrom", []):
                    if "configMapRef" in env_from:
                        name = env_from["configMapRef"]["name"]
                        need(where, "ConfigMap", name)
                        defined |= set((find(plain, "ConfigMap", name) or {}).get("data", {}))
                for env in container.get("env", []):
                    for var in VAR.findall(str(env.get("value", ""))):
                        if var not in defined:
                            problems.add(where, f"container {container['name']}: env {env['name']} uses $({var}), defined nowhere before it")
                    defined.add(env["name"])
                    config_map = env.get("valueFrom", {}).get("configMapKeyRef")
                    if config_map:
                        need(where, "ConfigMap", config_map["name"])
                for text in container.get("command", []) + container.get("args", []):
                    for var in VAR.findall(str(text)):
                        if var not in defined:
                            problems.add(where, f"container {container['name']}: $({var}) in its command or args is defined nowhere")


def check_files(objects, problems):
    for _, obj in objects:
        if obj["kind"] != "ConfigMap":
            continue
        for key, text in obj.get("data", {}).items():
            where = f"ConfigMap/{obj['metadata']['name']}: {key}"
            try:
                if key.endswith(".xml"):
                    ElementTree.fromstring(text.encode("utf-8"))
                elif key.endswith(".toml"):
                    tomllib.loads(text)
            except (ElementTree.ParseError, tomllib.TOMLDecodeError) as error:
                problems.add(where, f"does not parse: {error}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kustomization", help="path to kustomization.yaml")
    parser.add_argument("--kubernetes-version", default="1.29.0")
    parser.add_argument("--print", action="store_true", help="print the rendered objects")
    args = parser.parse_args()

    try:
        objects = render(args.kustomization)
    except (OSError, ValueError, KeyError, yaml.YAMLError) as error:
        print(f"validate-manifests: cannot render {args.kustomization}: {error}", file=sys.stderr)
        return 1
    if args.print:
        yaml.safe_dump_all([o for _, o in objects], sys.stdout, sort_keys=False)

    problems = Problems()
    for source, obj in objects:
        where = f"{source}: {obj.get('kind')}/{obj['metadata'].get('name')}"
        try:
            kubernetes_validate.validate(obj, args.kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path) or "(top)"
            problems.add(where, f"{path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.add(where, error.message)
    check_references(objects, problems)
    check_files(objects, problems)

    for line in problems.lines:
        print(f"validate-manifests: {line}", file=sys.stderr)
    if problems.lines:
        print(f"validate-manifests: {len(problems.lines)} problem(s) in {len(objects)} object(s)", file=sys.stderr)
        return 1
    kinds = sorted({o["kind"] for _, o in objects})
    print(
        f"validate-manifests: {len(objects)} object(s) valid against Kubernetes "
        f"{args.kubernetes_version} (strict): {', '.join(kinds)}",
        file=sys.stderr if args.print else sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
