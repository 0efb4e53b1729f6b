// postinstall: remember which package-lock.json node_modules was installed from, so that
// scripts/ensure-built.sh (run by ../scripts/serve) re-installs only when the lock changed.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

if (existsSync('package-lock.json') && existsSync('node_modules')) {
  const sum = createHash('sha256').update(readFileSync('package-lock.json')).digest('hex');
  writeFileSync('node_modules/.cloudops-package-lock.sha256', `${sum}\n`);
}
