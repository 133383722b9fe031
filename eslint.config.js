// ESLint: the typed rules that catch lost promises and unhandled cases, and the import boundaries
// of ../shared/DESIGN.md ("transcoder/ and uploader/ know nothing of the coordinator; transcoder/
// knows nothing of etcd or gRPC"), checked on the production code (tests may reach across).
import tseslint from 'typescript-eslint';

const outside = (folders) => folders.map((f) => ({ group: [`../${f}/*`, `../${f}/**`], message: `this layer must not import ${f}/ (../shared/DESIGN.md)` }));

export default tseslint.config(
  { ignores: ['node_modules/**', 'proto/gen/**', '**/*.js', 'coordinator/console/static/**', '.tessera/**'] },
  {
    files: ['**/*.ts'],
    languageOptions: { parser: tseslint.parser, parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
      'no-control-regex': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],
    },
  },
  {
    files: ['transcoder/**/*.ts'],
    ignores: ['**/*.test.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            ...outside(['coordinator', 'node-agent', 'uploader', 'sdk', 'deploy', 'ops']),
            { group: ['etcd3', '@grpc/*'], message: 'transcoder/ knows nothing of etcd or gRPC (../shared/DESIGN.md)' },
          ],
        },
      ],
    },
  },
  { files: ['uploader/**/*.ts'], ignores: ['**/*.test.ts'], rules: { 'no-restricted-imports': ['error', { patterns: outside(['coordinator', 'node-agent', 'sdk', 'ops']) }] } },
  { files: ['common/**/*.ts'], ignores: ['**/*.test.ts'], rules: { 'no-restricted-imports': ['error', { patterns: outside(['coordinator', 'node-agent', 'uploader', 'sdk', 'ops', 'deploy']) }] } },
  { files: ['node-agent/**/*.ts'], ignores: ['**/*.test.ts'], rules: { 'no-restricted-imports': ['error', { patterns: outside(['coordinator', 'sdk', 'ops']) }] } },
  { files: ['coordinator/**/*.ts'], ignores: ['**/*.test.ts'], rules: { 'no-restricted-imports': ['error', { patterns: outside(['node-agent', 'sdk']) }] } },
  { files: ['sdk/**/*.ts'], ignores: ['**/*.test.ts'], rules: { 'no-restricted-imports': ['error', { patterns: outside(['coordinator', 'node-agent']) }] } },
);
