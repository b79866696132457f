// Copy the Chart.js UMD build into dashboard/static/vendor/ (committed, so Python users need no build).
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, "..", "static", "vendor");
mkdirSync(vendor, { recursive: true });
copyFileSync(join(here, "node_modules", "chart.js", "dist", "chart.umd.js"), join(vendor, "chart.umd.js"));
console.log(`chart.umd.js -> ${vendor}`);
