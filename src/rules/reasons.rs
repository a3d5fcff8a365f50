//! The reason-code catalogue of RULES.md §5: one enum, each code with its
//! severity, clause and messages. A published code never changes meaning.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The claim is not granted.
    Rejection,
    /// The amount was changed by the rule.
    Adjustment,
    /// Informs; changes nothing.
    Notice,
}

macro_rules! reason_codes {
    ($($variant:ident = $s:literal, $sev:ident, $clause:literal, $zh:literal, $en:literal;)+) => {
        /// Every reason a decision can carry.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum ReasonCode { $(#[serde(rename = $s)] $variant),+ }

        impl ReasonCode {
            pub const ALL: &'static [ReasonCode] = &[$(ReasonCode::$variant),+];
            pub fn as_str(self) -> &'static str { match self { $(Self::$variant => $s),+ } }
            pub fn severity(self) -> Severity { match self { $(Self::$variant => Severity::$sev),+ } }
            /// The clause(s) the code rests on; a decision cites the precise clause applied.
            pub fn clause(self) -> &'static str { match self { $(Self::$variant => $clause),+ } }
            pub fn message_zh(self) -> &'static str { match self { $(Self::$variant => $zh),+ } }
            pub fn message_en(self) -> &'static str { match self { $(Self::$variant => $en),+ } }
        }
    };
}

reason_codes! {
    OutsidePolicyPeriod = "OUTSIDE_POLICY_PERIOD", Rejection, "R-PERIOD; WY 末段; CX 末段",
        "事件日期不在政策有效期内", "The event date is outside the document's effective period";
    KindNotInCountyPolicy = "KIND_NOT_IN_COUNTY_POLICY", Rejection, "R-KIND",
        "本县政策未设立该补贴项目", "The county's document does not offer this kind of subsidy";
    ApplicantNotEligible = "APPLICANT_NOT_ELIGIBLE", Rejection, "WY §2(1); I-2",
        "申请人与本县无户籍、居住、就业或失业登记关系", "The applicant has no hukou, residence, employment or unemployment registration in the county";
    ApplicantReceivesPension = "APPLICANT_RECEIVES_PENSION", Rejection, "WY §2(1); CX §3(3); I-1",
        "按月领取养老金人员不享受职业培训补贴", "A person receiving a monthly pension gets no person-level training subsidy";
    NotKeyTrainingGroup = "NOT_KEY_TRAINING_GROUP", Rejection, "CX §2(1), §3(3)",
        "申请人不属于重点培训对象", "The applicant is not in a key training group";
    NotLivingAllowanceGroup = "NOT_LIVING_ALLOWANCE_GROUP", Rejection, "CX §3(3)",
        "申请人不属于培训期间生活费补贴对象", "The applicant is not in a group entitled to the training living allowance";
    NotVeteran = "NOT_VETERAN", Rejection, "CX §3(3)",
        "申请人不是退役军人", "The applicant is not a veteran";
    PublicInstitutionStaffExcluded = "PUBLIC_INSTITUTION_STAFF_EXCLUDED", Rejection, "CX §3(5)",
        "机关事业单位在编人员不享受技能提升补贴", "Tenured civil servants and public-institution staff are excluded";
    CertificateBeforeEligibleDate = "CERTIFICATE_BEFORE_ELIGIBLE_DATE", Rejection, "CX §3(5)",
        "证书取得日期早于文件印发之日", "The certificate was issued before the document's issue date";
    LevelNotSubsidized = "LEVEL_NOT_SUBSIDIZED", Rejection, "CX §3(3), §3(5)",
        "该等级不在补贴范围内", "This certificate level is not subsidised";
    BelowMinClassHours = "BELOW_MIN_CLASS_HOURS", Rejection, "WY §4(1)2",
        "每期培训不足规定课时", "The course has fewer class hours than required";
    ClassSizeExceeded = "CLASS_SIZE_EXCEEDED", Rejection, "WY §4(1)2; I-8",
        "培训班人数超过规定且未经批准", "The class is larger than allowed and no exception was approved";
    MissingCompletionCertificate = "MISSING_COMPLETION_CERTIFICATE", Rejection, "WY §4(1)3",
        "未取得培训合格证书", "No training-completion certificate";
    AcceptanceNotPassed = "ACCEPTANCE_NOT_PASSED", Rejection, "CX §3(6)",
        "培训任务未验收合格", "The apprenticeship has not passed acceptance";
    NotTrainedInCounty = "NOT_TRAINED_IN_COUNTY", Rejection, "WY §4(2)",
        "未在本县参加安全技能培训", "The safety training was not taken in the county";
    TrainingTooShort = "TRAINING_TOO_SHORT", Rejection, "WY §4(3); CX §3(3); I-14",
        "培训时长不足", "The training is shorter than required";
    NotFiled = "NOT_FILED", Rejection, "WY §4(3)",
        "线上培训未向人力社保部门备案", "The online training was not filed with the HR bureau before it started";
    OutsideEpidemicWindow = "OUTSIDE_EPIDEMIC_WINDOW", Rejection, "WY §4(3)",
        "培训日期不在疫情补贴期限内", "Training days fall outside the epidemic subsidy window";
    AmountOutOfRange = "AMOUNT_OUT_OF_RANGE", Rejection, "CX §3(2)",
        "申报标准超出规定范围", "The claimed standard is outside the allowed range";
    PriorStandardApplies = "PRIOR_STANDARD_APPLIES", Rejection, "WY 末段; I-18",
        "方案发布前已开展的培训按原补贴标准核发", "Training begun before the plan's publication is paid under the earlier standard";
    NotEligibleStudent = "NOT_ELIGIBLE_STUDENT", Rejection, "CX §3(2)",
        "学生不符合补助条件", "The student does not meet the conditions of this allowance";
    AnnualLimitReached = "ANNUAL_LIMIT_REACHED", Rejection, "R-ANNUAL; WY §4(1); CX §5(2); I-3; I-4",
        "本年度已享受3次职业培训补贴", "The person has already been granted the yearly maximum of counted subsidies";
    DuplicateOccupationLevel = "DUPLICATE_OCCUPATION_LEVEL", Rejection, "R-SAME-LEVEL; WY §4(1); CX §3(5); I-5",
        "同一职业（项目）同一等级不可重复享受", "The same occupation at the same level was already subsidised";
    CertificateAlreadyUsed = "CERTIFICATE_ALREADY_USED", Rejection, "R-CERT; WY §5; CX §5(3)",
        "该证书已用于申领补贴", "This certificate already backs a granted claim";
    DuplicateSubsidy = "DUPLICATE_SUBSIDY", Rejection, "R-ONCE",
        "该补贴已享受，不可重复申领", "This subsidy was already granted for the same key";
    InstitutionCapReached = "INSTITUTION_CAP_REACHED", Rejection, "CX §3(1)",
        "机构累计补助已达上限", "The institution's cumulative cap is used up";
    CappedAtMaximum = "CAPPED_AT_MAXIMUM", Adjustment, "RULES §2",
        "按最高补贴标准核定", "The amount was cut to the maximum";
    CappedByCumulativeLimit = "CAPPED_BY_CUMULATIVE_LIMIT", Adjustment, "CX §3(1)",
        "按累计补助剩余额度核定", "The amount was cut to what is left of the cumulative cap";
    UpliftTradeFriction = "UPLIFT_TRADE_FRICTION", Adjustment, "WY §4(2); CX §3(5); I-6; I-9; I-12",
        "受经贸摩擦影响企业补贴标准上浮30%", "Standard raised by 30% for an enterprise affected by trade friction";
    UpliftLabourCooperation = "UPLIFT_LABOUR_COOPERATION", Adjustment, "CX §3(3)",
        "劳务合作基地学员来本县就业，补助标准上浮100%", "Standard raised by 100% for a labour co-operation base trainee employed in the county";
    ProratedByTrainees = "PRORATED_BY_TRAINEES", Adjustment, "WY §4(3); I-10",
        "培训人数不足100人，按比例扣减", "Fewer than 100 trainees: prorated";
    RepeatedCoursewareDeducted = "REPEATED_COURSEWARE_DEDUCTED", Adjustment, "WY §4(3)",
        "课件或考核测试重复部分按比例扣减", "Hours repeating earlier subsidised courseware were deducted in proportion";
    TrancheFirst = "TRANCHE_FIRST", Adjustment, "CX §3(6)",
        "首次拨付补贴总额的30%", "First tranche: 30% of the year's total";
    TrancheRemainder = "TRANCHE_REMAINDER", Adjustment, "CX §3(6)",
        "验收合格后拨付剩余补贴", "Remainder after acceptance, less the tranche already paid";
    InstitutionNotInDirectory = "INSTITUTION_NOT_IN_DIRECTORY", Notice, "CX 附件3",
        "培训机构不在本县培训学校名单内", "The training institution is not on the county's list of schools";
    PublicNoticeRequired = "PUBLIC_NOTICE_REQUIRED", Notice, "WY §5(1)-(2)",
        "结果经公示无误后发放", "Payment follows a public notice of the result";
}
