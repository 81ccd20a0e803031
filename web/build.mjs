// Builds the web terminal: esbuild bundles src/main.js, with the CSS it
// imports (xterm.js's own and src/style.css), into dist/assets/app.js and
// dist/assets/app.css, and src/index.html is copied to dist/index.html.
// The gateway embeds dist/ (see web.go). Run with `npm run build`.
import { build } from "esbuild";
import { copyFile, mkdir, readdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, "src");
const dist = join(here, "dist");

// Empty dist/ but keep dist/.keep, which holds the directory in git so that
// the Go embed pattern always matches.
await mkdir(dist, { recursive: true });
for (const name of await readdir(dist)) {
  if (name !== ".keep") await rm(join(dist, name), { recursive: true, force: true });
}

await build({
  entryPoints: { app: join(src, "main.js") },
  outdir: join(dist, "assets"),
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2020",
  platform: "browser",
  legalComments: "linked", // third-party licences go to app.js.LEGAL.txt / app.css.LEGAL.txt
  sourcemap: false,
  logLevel: "info",
});

await copyFile(join(src, "index.html"), join(dist, "index.html"));
