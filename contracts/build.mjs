// Compiles contracts/*.sol with the pinned solc-js and writes ABI + bytecode to
// agentguard/chain/artifacts/<Name>.json (shipped in the Python package, so users need
// no compiler). Usage: node contracts/build.mjs [output-dir]
import { readdirSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const here = dirname(fileURLToPath(import.meta.url));
const outDir = resolve(process.argv[2] ?? join(here, "..", "agentguard", "chain", "artifacts"));
// The deployable contracts; ECDSA is an internal library and needs no artifact.
const CONTRACTS = [
  "UsdCoin", "AgentVault", "AgentVaultFactory", "NewtonBlsValidator", "NewtonOperatorTable",
  "Permit2", "X402UptoPermit2Proxy", "OpgToken",
];

const sources = {};
for (const file of readdirSync(here).filter((f) => f.endsWith(".sol")).sort()) {
  sources[file] = { content: readFileSync(join(here, file), "utf8") };
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    // Cancun: transient storage for the reentrancy lock; live on Base since Ecotone.
    evmVersion: "cancun",
    optimizer: { enabled: true, runs: 1000 },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const problems = (output.errors ?? []).filter((e) => e.severity !== "info");
for (const p of problems) console.error(p.formattedMessage);
// Warnings fail the build too: the shipped bytecode should come from warning-free sources.
if (problems.length > 0) process.exit(1);

mkdirSync(outDir, { recursive: true });
for (const name of CONTRACTS) {
  const sourceName = `${name}.sol`;
  const compiled = output.contracts[sourceName]?.[name];
  if (!compiled) {
    console.error(`${name} not found in ${sourceName}`);
    process.exit(1);
  }
  const artifact = {
    contractName: name,
    sourceName: `contracts/${sourceName}`,
    compiler: `solc-js ${solc.version()}`,
    settings: input.settings,
    abi: compiled.abi,
    bytecode: `0x${compiled.evm.bytecode.object}`,
    deployedBytecode: `0x${compiled.evm.deployedBytecode.object}`,
  };
  writeFileSync(join(outDir, `${name}.json`), `${JSON.stringify(artifact, null, 2)}\n`);
}
console.log(`wrote ${CONTRACTS.length} artifacts to ${outDir}`);
