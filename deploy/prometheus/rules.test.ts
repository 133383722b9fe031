import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { loadOpsConfig } from '../../ops/config.js';
import { PROMETHEUS_RULE_PATH, RULES_PATH, renderPrometheusRule } from './render.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const read = (p: string): string => readFileSync(join(ROOT, p), 'utf8');

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const rules = (parse(readFileSync(RULES_PATH, 'utf8')) as { groups: { name: string; rules: Rule[] }[] }).groups.flatMap((g) => g.rules);

const hasPromtool = spawnSync('promtool', ['--version'], { stdio: 'ignore' }).status === 0;
if (!hasPromtool) process.stdout.write('deploy/prometheus/rules.test.ts: promtool checks skipped: no `promtool` (apt-get install prometheus; .ci/run installs it)\n');

/** GitHub's anchor for a Markdown heading. */
const anchor = (heading: string): string =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[^\w\- ]/g, '')
    .replace(/ /g, '-');

describe('deploy/prometheus alert rules', () => {
  it.skipIf(!hasPromtool)('pass `promtool check rules` and `promtool test rules`', () => {
    const check = spawnSync('promtool', ['check', 'rules', RULES_PATH], { encoding: 'utf8' });
    expect(check.status, check.stdout + check.stderr).toBe(0);
    const test = spawnSync('promtool', ['test', 'rules', 'tessera-rules.test.yaml'], { cwd: dirname(RULES_PATH), encoding: 'utf8' });
    expect(test.status, test.stdout + test.stderr).toBe(0);
    // The generated PrometheusRule is valid rules too.
    const dir = mkdtempSync(join(tmpdir(), 'tessera-rules-'));
    try {
      writeFileSync(join(dir, 'k8s-rules.yaml'), JSON.stringify((parse(read('deploy/k8s/monitoring/prometheus-rule.yaml')) as { spec: unknown }).spec));
      const k8s = spawnSync('promtool', ['check', 'rules', join(dir, 'k8s-rules.yaml')], { encoding: 'utf8' });
      expect(k8s.status, k8s.stdout + k8s.stderr).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('cover every signal the issue asks for', () => {
    const byExpr = (re: RegExp) => rules.filter((r) => re.test(r.expr)).map((r) => r.alert);
    expect(byExpr(/tessera_nodes\{state="ready"\}/)).toContain('TesseraNoReadyNodes');
    expect(byExpr(/tessera_job_stalled_seconds/)).toContain('TesseraJobStalled');
    expect(byExpr(/tessera_jobs_finished_total\{state="FAILED"\}/)).toContain('TesseraJobFailureRateHigh');
    expect(byExpr(/tessera_etcd_up/)).toContain('TesseraEtcdUnreachable');
    expect(byExpr(/etcd_server_has_leader/)).toContain('EtcdNoLeader');
    expect(byExpr(/tessera_coordinator_leader/)).toContain('TesseraNoCoordinatorLeader');
    expect(byExpr(/FINALIZING/)).toContain('TesseraUploaderBacklog');
    expect(byExpr(/tessera_staging_free_ratio/)).toEqual(expect.arrayContaining(['TesseraDiskNearlyFull', 'TesseraDiskFull']));
    expect(byExpr(/tessera_tls_cert_expiry_timestamp_seconds/).length).toBeGreaterThanOrEqual(1);
    expect(byExpr(/tessera_backup_last_success_timestamp_seconds/)).toContain('TesseraBackupMissed');
  });

  it('each rule has a severity and a runbook link to a section of docs/runbooks.md', () => {
    const runbooks = read('docs/runbooks.md');
    const anchors = new Set(
      runbooks
        .split('\n')
        .filter((l) => l.startsWith('## '))
        .map((l) => anchor(l.slice(3))),
    );
    expect(new Set(rules.map((r) => r.alert)).size).toBe(rules.length);
    for (const r of rules) {
      expect(['critical', 'warning'], r.alert).toContain(r.labels?.severity);
      expect(r.annotations?.summary, r.alert).toBeTruthy();
      const m = /^docs\/runbooks\.md#([\w-]+)$/.exec(r.annotations?.runbook_url ?? '');
      expect(m, `${r.alert} runbook_url`).not.toBeNull();
      expect(anchors.has(m![1]!), `${r.alert}: docs/runbooks.md has no section #${m![1]}`).toBe(true);
    }
  });

  it('the shipped file keeps production durations (tests shorten a templated copy)', () => {
    for (const r of rules) expect(r.for ?? '0m', r.alert).toMatch(/^\d+[mh]$/);
  });

  it('are wired into Kubernetes (PrometheusRule, in sync) and Compose (Prometheus loads them)', () => {
    expect(read('deploy/k8s/monitoring/prometheus-rule.yaml'), 'regenerate: node --import tsx deploy/prometheus/render.ts').toBe(renderPrometheusRule(readFileSync(RULES_PATH, 'utf8')));
    expect(existsSync(PROMETHEUS_RULE_PATH)).toBe(true);
    const kust = parse(read('deploy/k8s/monitoring/kustomization.yaml')) as { resources: string[]; namespace: string };
    expect(kust.resources).toEqual(['prometheus-rule.yaml']);
    expect(kust.namespace).toBe('tessera');

    const ops = parse(read('deploy/compose.ops.yaml')) as {
      services: Record<string, { image: string; volumes?: string[]; command?: string[]; environment?: Record<string, string>; depends_on?: Record<string, unknown> }>;
    };
    const prom = ops.services['prometheus']!;
    const mounts = new Map((prom.volumes ?? []).map((v) => [v.split(':')[1], v.split(':')[0]]));
    const cfgHost = mounts.get('/etc/prometheus/prometheus.yml')!;
    expect(existsSync(join(ROOT, 'deploy', cfgHost))).toBe(true);
    const promCfg = parse(read(join('deploy', cfgHost))) as { rule_files: string[]; scrape_configs: { job_name: string }[] };
    for (const f of promCfg.rule_files) expect(existsSync(join(ROOT, 'deploy', mounts.get(f)!)), f).toBe(true);
    expect(mounts.get('/etc/prometheus/tessera-rules.yaml')).toBe('./prometheus/tessera-rules.yaml');
    expect(promCfg.scrape_configs.map((s) => s.job_name)).toEqual(expect.arrayContaining(['tessera-coordinator', 'tessera-node-agent', 'tessera-uploader', 'etcd']));
    // Services it depends on exist in the base file.
    const base = parse(read('deploy/compose.yaml')) as { services: Record<string, unknown> };
    for (const d of Object.keys(ops.services['backup']!.depends_on ?? {})) expect(base.services[d], d).toBeDefined();
  });
});

describe('scheduled etcd backups', () => {
  it('Kubernetes: an hourly CronJob runs `tessera admin backup` with the cluster settings and a retention', () => {
    const docs = parseAllDocuments(read('deploy/k8s/backup/etcd-backup.yaml')).map((d) => d.toJS() as Record<string, any>);
    expect(docs).toHaveLength(1);
    const cj = docs[0]!;
    expect(cj.apiVersion).toBe('batch/v1');
    expect(cj.kind).toBe('CronJob');
    expect(cj.metadata.namespace).toBe('tessera');
    expect(cj.spec.schedule).toMatch(/^\d+ \* \* \* \*$/); // hourly: the RPO in docs/disaster-recovery.md
    expect(cj.spec.concurrencyPolicy).toBe('Forbid');
    const pod = cj.spec.jobTemplate.spec.template.spec;
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    const c = pod.containers[0];
    expect(c.args).toEqual(['cli/cli.ts', 'admin', 'backup']);
    expect(c.envFrom.map((e: Record<string, { name: string }>) => Object.values(e)[0]!.name).sort()).toEqual(['tessera-config', 'tessera-secrets']);
    expect(Number(c.env.find((e: { name: string }) => e.name === 'BACKUP_RETAIN').value)).toBeGreaterThanOrEqual(2);
    expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
    expect(c.volumeMounts.map((m: { mountPath: string }) => m.mountPath)).toContain('/tmp');
    // The settings it gets (ConfigMap, Secret, its own env) are ones the backup command accepts.
    const cm = (parse(read('deploy/k8s/configmap.yaml')) as { data: Record<string, string> }).data;
    const secret = (parseAllDocuments(read('deploy/k8s/secret.yaml'))[0]!.toJS() as { stringData: Record<string, string> }).stringData;
    const env = { ...cm, ...secret, ...Object.fromEntries(c.env.map((e: { name: string; value: string }) => [e.name, e.value])) };
    const cfg = loadOpsConfig(env);
    expect(cfg.ETCD_ENDPOINTS.length).toBe(3);
    expect(cfg.BACKUP_RETAIN).toBe(48);
    const kust = parse(read('deploy/k8s/backup/kustomization.yaml')) as { resources: string[] };
    expect(kust.resources).toEqual(['etcd-backup.yaml']);
  });

  it('Compose: a backup service runs `tessera admin backup --every 1h`', () => {
    const ops = parse(read('deploy/compose.ops.yaml')) as { services: Record<string, { command: string[]; environment: Record<string, string> }> };
    expect(ops.services['backup']!.command).toEqual(['cli/cli.ts', 'admin', 'backup', '--every', '1h']);
    expect(ops.services['backup']!.environment['ETCD_ENDPOINTS']).toBe('http://etcd:2379');
  });

  it('.ci/run installs promtool/prometheus and etcdctl when missing', () => {
    const ci = read('.ci/run');
    for (const pair of ['promtool:prometheus', 'prometheus:prometheus', 'etcdctl:etcd-client']) expect(ci).toContain(pair);
  });
});
