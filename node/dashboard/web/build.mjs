// Copies the WASM build of onnxruntime-web from node_modules into ../static/vendor/, with its
// license: the only files the dashboard's in-browser embedding (../static/embed.js) loads.
//
//   cd node/dashboard/web && npm ci && node build.mjs
//
// The copies are committed, so installing calinode needs neither npm nor a network; this script
// is how they were made and how to make them again after changing the pinned version in
// package.json. Only the single-file WASM backend is taken: ort.wasm.min.mjs (the JS API),
// ort-wasm-simd-threaded.mjs (Emscripten glue it imports) and ort-wasm-simd-threaded.wasm. The
// same .wasm runs with one thread when the page is not cross-origin isolated (the node serves no
// COOP/COEP headers), so no separate non-threaded build is needed. No WebGPU/WebGL/JSEP build:
// a query is a few dozen tokens, and the WASM CPU kernels are what matches the node's CPU ones.
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "node_modules", "onnxruntime-web", "dist");
const target = join(here, "..", "static", "vendor", "onnxruntime-web");
const FILES = ["ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"];

const pkg = JSON.parse(readFileSync(join(here, "node_modules", "onnxruntime-web",
                                        "package.json"), "utf8"));
const pinned = JSON.parse(readFileSync(join(here, "package.json"), "utf8"))
  .dependencies["onnxruntime-web"];
if (pkg.version !== pinned) {
  throw new Error(`node_modules has onnxruntime-web ${pkg.version}, package.json pins ${pinned}:`
                  + " run npm ci first");
}
if (pkg.license !== "MIT") {
  throw new Error(`onnxruntime-web ${pkg.version} is no longer MIT (${pkg.license}): ` +
                  "review the license before vendoring it");
}

rmSync(target, { recursive: true, force: true });
mkdirSync(target, { recursive: true });
for (const name of FILES) {
  copyFileSync(join(dist, name), join(target, name));
}
// The npm package carries no LICENSE file, only "license": "MIT" and the header of its files
// ("Copyright (c) Microsoft Corporation ... Licensed under the MIT License"): the MIT terms,
// written out as the license requires.
writeFileSync(join(target, "LICENSE"), `onnxruntime-web ${pkg.version}
(${pkg.homepage || "https://github.com/microsoft/onnxruntime"})

MIT License

Copyright (c) Microsoft Corporation. All rights reserved.

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.

The WebAssembly binary is ONNX Runtime compiled with Emscripten; the third-party
components built into it are listed, with their licenses, in ThirdPartyNotices.txt
of the ONNX Runtime source tree at the tag v${pkg.version}.
`);
writeFileSync(join(target, "VERSION"), `${pkg.version}\n`);
console.log(`vendored onnxruntime-web ${pkg.version}: ${FILES.join(", ")} -> ${target}`);
