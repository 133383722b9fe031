import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';

const HERE = dirname(fileURLToPath(import.meta.url));
export const RULES_PATH = join(HERE, 'tessera-rules.yaml');
export const PROMETHEUS_RULE_PATH = join(HERE, '..', 'k8s', 'monitoring', 'prometheus-rule.yaml');

/**
 * deploy/k8s/monitoring/prometheus-rule.yaml from deploy/prometheus/tessera-rules.yaml: the same
 * groups in a PrometheusRule (kustomize cannot load files outside its folder, so the rules are
 * copied; deploy/prometheus/rules.test.ts fails on drift).
 *   node --import tsx deploy/prometheus/render.ts
 */
export function renderPrometheusRule(rulesText: string): string {
  const rules = parse(rulesText) as { groups: unknown[] };
  const obj = {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: {
      name: 'tessera',
      namespace: 'tessera',
      labels: { 'app.kubernetes.io/name': 'tessera', 'app.kubernetes.io/part-of': 'tessera', role: 'alert-rules' },
    },
    spec: { groups: rules.groups },
  };
  return `# GENERATED from deploy/prometheus/tessera-rules.yaml by deploy/prometheus/render.ts: edit that file.\n${stringify(obj, { lineWidth: 0 })}`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  writeFileSync(PROMETHEUS_RULE_PATH, renderPrometheusRule(readFileSync(RULES_PATH, 'utf8')));
  process.stdout.write(`wrote ${PROMETHEUS_RULE_PATH}\n`);
}
