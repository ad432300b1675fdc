// Validates Kubernetes manifests against the API schema of the npm package
// kubernetes-models 4.5 (generated from Kubernetes' published OpenAPI, a
// 1.29+ API: containers' restartPolicy, the sleep action), as the
// API server would on `kubectl apply`: types, enums, formats, required
// fields (the package's validate()), and no unknown fields (strict field
// validation, kubectl's default since 1.27; the package's validate() lets
// unknown fields through, so they are checked here from its type
// declarations).
//   node validate.mjs FILE.yaml...
// Prints one line per object and a summary line; exits 1 if any failed.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = path.join(here, "node_modules");

// Every interface of the package's .d.ts files, by its full name
// (IIoK8sApiCoreV1Container): its properties and their types as written.
const interfaces = new Map();
function indexDts(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) indexDts(p);
    else if (e.name.endsWith(".d.ts")) indexFile(fs.readFileSync(p, "utf8"));
  }
}
function indexFile(text) {
  const local = new Map();
  const re = /^export interface (\w+)(?: extends [\w, ]+)? \{\n([\s\S]*?)^\}/gm;
  for (let m; (m = re.exec(text)); ) {
    const props = new Map();
    const lines = m[2].split("\n");
    for (let i = 0; i < lines.length; i++) {
      const pm = /^ {4}"([^"]+)"\??: (.*)$/.exec(lines[i]);
      if (!pm) continue;
      let type = pm[2];
      while (!type.endsWith(";") && i + 1 < lines.length) type += " " + lines[++i].trim();
      props.set(pm[1], type.replace(/;$/, "").trim());
    }
    local.set(m[1], props);
  }
  const alias = /^export (?:type )?\{ (\w+) as (\w+)/m.exec(text);
  if (alias && local.has(alias[1])) interfaces.set(alias[2], local.get(alias[1]));
}
indexDts(path.join(modules, "kubernetes-models"));
indexDts(path.join(modules, "@kubernetes-models", "apimachinery"));

// Unknown fields under obj, which the schema types as `type`.
function unknownFields(obj, type, at, out) {
  type = type.trim();
  let m;
  if ((m = /^Array<(.*)>$/.exec(type))) {
    if (Array.isArray(obj)) obj.forEach((v, i) => unknownFields(v, m[1], `${at}/${i}`, out));
  } else if ((m = /^\{ \[key: string\]: (.*); \}$/.exec(type))) {
    if (obj && typeof obj === "object") for (const k of Object.keys(obj)) unknownFields(obj[k], m[1], `${at}/${k}`, out);
  } else if (interfaces.has(type) && obj && typeof obj === "object" && !Array.isArray(obj)) {
    const props = interfaces.get(type);
    for (const k of Object.keys(obj)) {
      if (!props.has(k)) out.push(`${at}/${k}: unknown field`);
      else unknownFields(obj[k], props.get(k), `${at}/${k}`, out);
    }
  }
}

async function modelFor(apiVersion, kind) {
  // "v1" is the core group; "apps/v1" is kubernetes-models/apps/v1.
  const mod = await import("kubernetes-models/" + apiVersion);
  if (!mod[kind]) throw new Error(`no model for ${apiVersion} ${kind}`);
  return mod[kind];
}

let passed = 0, failed = 0;
for (const file of process.argv.slice(2)) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length) {
      console.log(`FAIL ${file}: ${doc.errors[0].message}`);
      failed++;
      continue;
    }
    const obj = doc.toJS();
    if (obj === null) continue;
    const name = `${file}: ${obj.kind}/${obj.metadata && obj.metadata.name}`;
    try {
      const Model = await modelFor(obj.apiVersion, obj.kind);
      const problems = [];
      try {
        new Model(obj).validate();
      } catch (e) {
        problems.push(e.message);
      }
      const full = "IIoK8s" + (obj.apiVersion.includes("/") ? "Api" : "ApiCore") +
        obj.apiVersion.split("/").map((s) => s.split(".")[0]).map((s) => s[0].toUpperCase() + s.slice(1)).join("") + obj.kind;
      if (!interfaces.has(full)) throw new Error(`no schema for ${full}`);
      unknownFields(obj, full, "", problems);
      if (problems.length) throw new Error(problems.join("; "));
      console.log(`ok   ${name}`);
      passed++;
    } catch (e) {
      console.log(`FAIL ${name}: ${e.message}`);
      failed++;
    }
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed || !passed ? 1 : 0);
