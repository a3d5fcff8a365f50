//! The claim's schema, built from [`SHAPES`], the table the reader uses: a
//! `oneOf` with one branch per kind and `kind` as its discriminator. Where
//! the counties' tables differ, the kind's branch is itself a `oneOf` with
//! `county` as discriminator.

use std::borrow::Cow;

use serde_json::json;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{
    AdditionalProperties, Discriminator, KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type,
};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::claim::{Applicant, Claim, Claimant, Organization, Shape, SHAPES};
use super::{ClaimId, County, CraftsmanTitle, DepartmentCode, IndustryCode, Kind};

/// `schema` (an object) with one more JSON Schema keyword, for rules between
/// fields that utoipa's builders do not offer (`oneOf` of `required`, `if`).
fn with_keyword(schema: RefOr<Schema>, keyword: &str, value: serde_json::Value) -> RefOr<Schema> {
    let RefOr::T(Schema::Object(mut object)) = schema else {
        return schema;
    };
    object.extensions.get_or_insert_with(Default::default).insert(keyword.to_string(), value);
    RefOr::T(Schema::Object(object))
}

/// The rules between fields of a `details` that the reader checks after the
/// fields (`claim::cross_checks`), where JSON Schema can state them.
fn details_schema(shape: &Shape) -> RefOr<Schema> {
    let schema = (shape.details_schema)();
    match shape.kind {
        Kind::VeteranTraining => {
            let occupation =
                json!({"required": ["occupation_code"], "properties": {"occupation_code": {"type": "string"}}});
            let schema = with_keyword(schema, "if", occupation);
            let schema = with_keyword(schema, "then", json!({"properties": {"project_code": {"type": "null"}}}));
            with_keyword(
                schema,
                "else",
                json!({"required": ["project_code"], "properties": {"project_code": {"type": "string"}}}),
            )
        }
        Kind::OnlineTraining => {
            let platform_purchase =
                json!({"properties": {"mode": {"const": "platform_purchase"}}, "required": ["mode"]});
            let schema = with_keyword(schema, "if", platform_purchase);
            let invoice = json!({"$ref": format!("#/components/schemas/{}", super::Money::name())});
            with_keyword(
                schema,
                "then",
                json!({"required": ["invoice_amount"], "properties": {"invoice_amount": invoice}}),
            )
        }
        _ => schema,
    }
}

/// A craftsman award is claimed by the applicant, or by the organisation for
/// the golden-cradle title (`claim::is_organization_kind`), never both.
fn claimant_by_title(object: RefOr<Schema>) -> RefOr<Schema> {
    let golden = json!({"const": CraftsmanTitle::GoldenCradle.as_str()});
    let object = with_keyword(
        object,
        "if",
        json!({"properties": {"details": {"properties": {"title": golden}, "required": ["title"]}}, "required": ["details"]}),
    );
    let only = |party: &str, not: &str| json!({"required": [party], "properties": {party: {"type": "object"}, not: {"type": "null"}}});
    let object = with_keyword(object, "then", only("organization", "applicant"));
    with_keyword(object, "else", only("applicant", "organization"))
}

/// The applicant schemas a kind may ask for, by what it needs of the employer.
const APPLICANT_WITH_EMPLOYER: &str = "ApplicantWithEmployer";
const APPLICANT_WITH_EMPLOYER_INDUSTRY: &str = "ApplicantWithEmployerIndustry";

fn reference(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

/// An optional property: `schema`, or `null` (which reads as absent).
fn nullable(schema: RefOr<Schema>, description: &str) -> OneOfBuilder {
    OneOfBuilder::new().item(schema).item(ObjectBuilder::new().schema_type(Type::Null)).description(Some(description))
}

/// A string that must equal `value` (`const`, JSON Schema 2020-12).
fn constant(value: &str, description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .extensions(Some(Extensions::from_iter([("const", json!(value))])))
}

/// The branch name of one shape: `SkillUpgradeClaim`, `WuyiProjectTrainingClaim`.
fn branch_name(shape: &Shape) -> String {
    let county = shape.county.map(|c| pascal(c.as_str())).unwrap_or_default();
    format!("{county}{}Claim", pascal(shape.kind.as_str()))
}

/// The name of a kind's entry in the top-level `oneOf`.
fn kind_name(kind: Kind) -> String {
    format!("{}Claim", pascal(kind.as_str()))
}

fn offered_by(shape: &Shape) -> String {
    match shape.county {
        Some(c) => format!("The shape of `{}` in {}.", shape.kind, pascal(c.as_str())),
        None => format!(
            "`{}`. A county whose plan does not offer it decides the claim `KIND_NOT_IN_COUNTY_POLICY`.",
            shape.kind
        ),
    }
}

/// One branch: the claim envelope with `kind` fixed and its `details` type.
fn branch(shape: &Shape) -> RefOr<Schema> {
    let county: RefOr<Schema> = match shape.county {
        Some(c) => constant(c.as_str(), "The county whose table gives this shape.").into(),
        None => reference(&County::name()),
    };
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(offered_by(shape)))
        .property("claim_id", reference(&ClaimId::name()))
        .property("county", county)
        .property("kind", constant(shape.kind.as_str(), "The kind of subsidy claimed."))
        .property(
            "event_date",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
                .description(Some("Certificate issue date, training or school period end, or award date."))
                .examples(["2020-06-15"]),
        )
        .property("department", nullable(reference(&DepartmentCode::name()), "The plan's department, if any."))
        .property(
            "institution",
            nullable(reference(&Organization::name()), "The training institution or school, when there is one."),
        )
        .property("details", reference(&(shape.details_name)()))
        .required("claim_id")
        .required("county")
        .required("kind")
        .required("event_date")
        .required("details")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    let applicant = match shape.claimant {
        Claimant::PersonWithEmployer => Some(APPLICANT_WITH_EMPLOYER.to_string()),
        Claimant::PersonWithEmployerIndustry => Some(APPLICANT_WITH_EMPLOYER_INDUSTRY.to_string()),
        Claimant::Organization => None,
        Claimant::Person | Claimant::PersonOrOrganization => Some(Applicant::name().into_owned()),
    };
    // The other party may only be absent, or `null` (which reads as absent).
    let absent = || ObjectBuilder::new().schema_type(Type::Null).description(Some("Not part of this kind's claim."));
    // Where either party may claim, each may also be `null`; `if`/`then`/`else` picks.
    let party = |name: &str, description: &str| -> RefOr<Schema> {
        match shape.claimant {
            Claimant::PersonOrOrganization => nullable(reference(name), description).into(),
            _ => reference(name),
        }
    };
    object = match applicant {
        Some(applicant) => object.property("applicant", party(&applicant, "The person claiming.")),
        None => object.property("applicant", absent()),
    };
    object = if matches!(shape.claimant, Claimant::Organization | Claimant::PersonOrOrganization) {
        object.property("organization", party(&Organization::name(), "The organisation claiming."))
    } else {
        object.property("organization", absent())
    };
    match shape.claimant {
        Claimant::Organization => object.required("organization").into(),
        Claimant::PersonOrOrganization => {
            let object = object.description(Some(format!(
                "{} Claimed by the applicant, or by the organisation for the `golden_cradle` title.",
                offered_by(shape)
            )));
            claimant_by_title(object.into())
        }
        _ => county_only(shape, object.required("applicant").into()),
    }
}

/// A shape both counties read whose fields only one county's table gives
/// (`claim::county_only_fields`): in another county's claim they are
/// unknown, whatever their value.
fn county_only(shape: &Shape, object: RefOr<Schema>) -> RefOr<Schema> {
    let Some((only, names)) = super::claim::county_only_fields(shape.kind).filter(|_| shape.county.is_none()) else {
        return object;
    };
    let refused: serde_json::Map<String, serde_json::Value> =
        names.iter().map(|name| (name.to_string(), json!({"not": {}}))).collect();
    let elsewhere = json!({"properties": {"county": {"not": {"const": only.as_str()}}}, "required": ["county"]});
    let object = with_keyword(object, "if", elsewhere);
    with_keyword(object, "then", json!({"properties": {"details": {"properties": refused}}}))
}

const ORGANIZATION_WITH_INDUSTRY: &str = "OrganizationWithIndustry";

/// `schema` (an object) with `field` required and given the schema `to`.
fn requiring(schema: RefOr<Schema>, field: &str, to: RefOr<Schema>, description: &str) -> RefOr<Schema> {
    let RefOr::T(Schema::Object(mut object)) = schema else {
        return schema;
    };
    if !object.required.iter().any(|f| f == field) {
        object.required.push(field.to_string());
    }
    object.properties.insert(field.to_string(), to);
    object.description = Some(description.to_string());
    RefOr::T(Schema::Object(object))
}

/// The applicant schema with the employer (and its industry code) required.
fn applicant_needing(industry: bool) -> RefOr<Schema> {
    if industry {
        let why = "An applicant whose employer's industry code sets the amount.";
        requiring(Applicant::schema(), "employer", reference(ORGANIZATION_WITH_INDUSTRY), why)
    } else {
        let why = "An applicant whose employer is paid.";
        requiring(Applicant::schema(), "employer", reference(&Organization::name()), why)
    }
}

fn discriminated(property: &str, items: Vec<(String, String)>, description: &str) -> RefOr<Schema> {
    let mapping = items.iter().map(|(value, name)| (value.clone(), format!("#/components/schemas/{name}")));
    let mut one_of = OneOfBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .discriminator(Some(Discriminator::with_mapping(property, mapping)));
    for (_, name) in &items {
        one_of = one_of.item(reference(name));
    }
    one_of.into()
}

/// The counties' shapes of one kind, keyed by county.
fn county_shapes(kind: Kind) -> Vec<(String, String)> {
    SHAPES
        .iter()
        .filter(|s| s.kind == kind)
        .filter_map(|s| s.county.map(|c| (c.as_str().to_string(), branch_name(s))))
        .collect()
}

impl PartialSchema for Claim {
    fn schema() -> RefOr<Schema> {
        let kinds = Kind::ALL.iter().map(|k| (k.as_str().to_string(), kind_name(*k))).collect();
        discriminated(
            "kind",
            kinds,
            "A claim (API.md §3). `kind` selects the shape of `details` and who claims: the applicant, or the \
             organisation for organisation kinds. Unknown fields are refused.",
        )
    }
}

impl ToSchema for Claim {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ClaimRequest")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        for shape in &SHAPES {
            schemas.push((branch_name(shape), branch(shape)));
            schemas.push(((shape.details_name)().into_owned(), details_schema(shape)));
            (shape.details_refs)(schemas);
        }
        for kind in Kind::ALL {
            let by_county = county_shapes(*kind);
            if !by_county.is_empty() {
                let why = format!("`{kind}`: the counties' tables differ, so `county` selects the shape.");
                schemas.push((kind_name(*kind), discriminated("county", by_county, &why)));
            }
        }
        schemas.push((Applicant::name().into_owned(), Applicant::schema()));
        Applicant::schemas(schemas);
        schemas.push((APPLICANT_WITH_EMPLOYER.into(), applicant_needing(false)));
        schemas.push((APPLICANT_WITH_EMPLOYER_INDUSTRY.into(), applicant_needing(true)));
        schemas.push((Organization::name().into_owned(), Organization::schema()));
        let with_industry = requiring(
            Organization::schema(),
            "industry_code",
            reference(&IndustryCode::name()),
            "An organisation with its industry code.",
        );
        schemas.push((ORGANIZATION_WITH_INDUSTRY.into(), with_industry));
        Organization::schemas(schemas);
        for (name, schema) in [
            (ClaimId::name(), ClaimId::schema()),
            (County::name(), County::schema()),
            (DepartmentCode::name(), DepartmentCode::schema()),
        ] {
            schemas.push((name.into_owned(), schema));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field only one county's table gives, on a shape both counties
    /// read, is refused by the schema in the other county's claims, as the
    /// reader refuses it.
    #[test]
    fn every_county_only_field_is_refused_elsewhere_by_the_schema() {
        let mut checked = 0;
        for shape in SHAPES.iter().filter(|s| s.county.is_none()) {
            let Some((only, names)) = super::super::claim::county_only_fields(shape.kind) else { continue };
            let branch = serde_json::to_value(branch(shape)).unwrap();
            assert_eq!(
                branch["if"]["properties"]["county"],
                json!({"not": {"const": only.as_str()}}),
                "{}",
                shape.kind
            );
            for name in names {
                assert_eq!(
                    branch["then"]["properties"]["details"]["properties"][name],
                    json!({"not": {}}),
                    "{}",
                    shape.kind
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 3, "qualification training and the two WY apprentice kinds");
    }

    #[test]
    fn every_kind_is_one_branch_of_the_discriminator() {
        let schema = serde_json::to_value(Claim::schema()).unwrap();
        let mapping = schema["discriminator"]["mapping"].as_object().unwrap();
        assert_eq!(mapping.len(), Kind::ALL.len());
        assert_eq!(mapping["project_training"], "#/components/schemas/ProjectTrainingClaim");
        let mut names = Vec::new();
        Claim::schemas(&mut names);
        for target in mapping.values() {
            let name = target.as_str().unwrap().trim_start_matches("#/components/schemas/");
            assert!(names.iter().any(|(n, _)| n == name), "{name} is not registered");
        }
    }

    #[test]
    fn a_branch_fixes_its_kind_and_names_its_details() {
        let shape = SHAPES.iter().find(|s| s.kind == Kind::SkillUpgrade).unwrap();
        let schema = serde_json::to_value(branch(shape)).unwrap();
        assert_eq!(schema["properties"]["kind"]["const"], "skill_upgrade");
        assert_eq!(schema["properties"]["details"]["$ref"], "#/components/schemas/SkillUpgradeDetails");
        assert_eq!(schema["additionalProperties"], false);
        assert!(schema["required"].as_array().unwrap().contains(&json!("applicant")));
    }
}
