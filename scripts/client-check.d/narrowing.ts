// Compiled with `tsc --strict` against the types openapi-typescript
// generates from openapi/openapi.json: `kind` (and `county`, where the
// counties' tables differ) narrows `details`.
import type { components } from "./api";

type Claim = components["schemas"]["ClaimRequest"];

export function certificateOf(claim: Claim): string | undefined {
  switch (claim.kind) {
    case "skill_upgrade":
      return claim.details.certificate_number;
    case "qualification_training":
      return claim.details.certificate_number + claim.details.payee;
    case "online_training":
      // An organisation kind: the organisation is required.
      return claim.organization.credit_code + claim.details.period_id;
    case "project_training":
      if (claim.county === "wuyi") {
        const hours: number = claim.details.class_hours;
        return String(hours);
      }
      return claim.details.fee;
    case "safety_training":
      return claim.county === "wuyi" ? claim.details.approved_fee_standard : claim.details.training_type;
    default:
      return undefined;
  }
}

export const good: Claim = {
  claim_id: "TS-1",
  county: "changxing",
  kind: "skill_upgrade",
  event_date: "2020-05-10",
  applicant: { id_number: "330522198610021211", name: "王一" },
  details: { occupation_code: "6-18-01-01", level: "senior_technician", certificate_number: "ZS-1" },
};

// @ts-expect-error skill_upgrade details have no fee
export const extraField: Claim = { ...good, details: { ...good.details, fee: "1.00" } };

const person = { id_number: "330723198503011023", name: "张二" };
const skillDetails = { occupation_code: "6-18-01-01", level: "senior", certificate_number: "ZS-1" } as const;

// @ts-expect-error qualification_training needs its own details (a payee), not skill_upgrade's
export const wrongKind: Claim = { claim_id: "TS-2", county: "wuyi", kind: "qualification_training", event_date: "2020-06-15", applicant: person, details: skillDetails };

// @ts-expect-error the Wuyi project-training table has no fee
export const wrongCounty: Claim = { claim_id: "TS-3", county: "wuyi", kind: "project_training", event_date: "2020-09-30", applicant: person, details: { project_code: "P", completion_certificate_number: "C", fee: "600.00" } };

// @ts-expect-error an organisation kind is not claimed by a person
export const wrongClaimant: Claim = { claim_id: "TS-4", county: "wuyi", kind: "online_training", event_date: "2020-03-06", applicant: person, details: { period_id: "P1", mode: "self_produced", trainees: 1, days: [{ date: "2020-03-05", class_hours: 4 }] } };
