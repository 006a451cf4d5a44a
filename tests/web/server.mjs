// Starts `emovlm serve` on a free loopback port for the node tests and stops it with SIGTERM.
import { spawn } from 'node:child_process';

export const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (CTest sets it; see tests/CMakeLists.txt)`);
  return v;
};

// args: the serve flags besides --port; resolves once the server prints its URL.
export function startServer(args, { timeoutMs = 180000, extraEnv = {} } = {}) {
  const proc = spawn(env('EMOVLM_CLI'), ['serve', '--port', '0', '--device', 'cpu', '--access-log', 'none', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...extraEnv },
  });
  let out = '';
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`the server did not start within ${timeoutMs} ms: ${err}`));
    }, timeoutMs);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the server exited (${code}) before listening: ${err}`));
    });
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/serving on (http:\/\/127\.0\.0\.1:(\d+))/);
      if (!m) return;
      clearTimeout(timer);
      proc.removeAllListeners('exit');
      resolve({
        url: m[1],
        port: Number(m[2]),
        stderr: () => err,
        stop: () => new Promise((done) => {
          if (proc.exitCode !== null) return done(proc.exitCode);
          proc.on('exit', (code) => done(code));
          proc.kill('SIGTERM');
        }),
      });
    });
  });
}
