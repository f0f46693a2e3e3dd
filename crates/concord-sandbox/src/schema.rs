//! Objects and fields of the sandbox org: the built-in standard objects with their common
//! fields, system fields on every object, and custom objects / fields from a schema file.
//! `describe` renders them in the shape of Salesforce's REST describe.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as J};

/// A field type, as Salesforce's describe names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Id,
    String,
    Textarea,
    Email,
    Phone,
    Url,
    Picklist,
    Multipicklist,
    Boolean,
    Int,
    Double,
    Currency,
    Percent,
    Date,
    Datetime,
    Reference,
    /// A compound address (read-only: its components are written).
    Address,
}

impl FieldType {
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Id => "id",
            FieldType::String => "string",
            FieldType::Textarea => "textarea",
            FieldType::Email => "email",
            FieldType::Phone => "phone",
            FieldType::Url => "url",
            FieldType::Picklist => "picklist",
            FieldType::Multipicklist => "multipicklist",
            FieldType::Boolean => "boolean",
            FieldType::Int => "int",
            FieldType::Double => "double",
            FieldType::Currency => "currency",
            FieldType::Percent => "percent",
            FieldType::Date => "date",
            FieldType::Datetime => "datetime",
            FieldType::Reference => "reference",
            FieldType::Address => "address",
        }
    }
    fn soap(self) -> &'static str {
        match self {
            FieldType::Id | FieldType::Reference => "tns:ID",
            FieldType::Boolean => "xsd:boolean",
            FieldType::Int => "xsd:int",
            FieldType::Double | FieldType::Currency | FieldType::Percent => "xsd:double",
            FieldType::Date => "xsd:date",
            FieldType::Datetime => "xsd:dateTime",
            FieldType::Address => "urn:address",
            _ => "xsd:string",
        }
    }
    /// Whether values of this type are text.
    pub fn is_text(self) -> bool {
        matches!(
            self,
            FieldType::Id
                | FieldType::String
                | FieldType::Textarea
                | FieldType::Email
                | FieldType::Phone
                | FieldType::Url
                | FieldType::Picklist
                | FieldType::Multipicklist
                | FieldType::Reference
        )
    }
}

/// One field of an object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: FieldType,
    #[serde(default)]
    pub label: Option<String>,
    /// Text length (default 255 for string, 32 768 for textarea).
    #[serde(default)]
    pub length: Option<u32>,
    /// Number digits and scale (default 18, 0 / 2 for currency).
    #[serde(default)]
    pub precision: Option<u32>,
    #[serde(default)]
    pub scale: Option<u32>,
    /// Required on create (describe: `nillable = false`, `createable = true`).
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub unique: bool,
    #[serde(default)]
    pub external_id: bool,
    /// For references: the object(s) pointed to.
    #[serde(default)]
    pub reference_to: Vec<String>,
    /// For references: the relationship name used in SOQL paths (`Account` for `AccountId`).
    #[serde(default)]
    pub relationship_name: Option<String>,
    #[serde(default)]
    pub picklist_values: Vec<String>,
    /// The value a create without this field gets (a picklist's default value).
    #[serde(default)]
    pub default_value: Option<String>,
    /// An AutoNumber: the display format (`{00000000}`, `INV-{0000}`); the org numbers each
    /// created record, the field is read-only.
    #[serde(default)]
    pub auto_number: Option<String>,
    /// For references: the name parents use for their children in SOQL subqueries
    /// (`Contacts` for Contact.AccountId; custom ones end in `__r`). Default for a custom
    /// reference: the child object's plural label without spaces, with `__r`.
    #[serde(default)]
    pub child_relationship_name: Option<String>,
    /// Set by the system only (Id, CreatedDate, …).
    #[serde(skip)]
    pub system: bool,
    /// Writable on create only (PricebookEntry.Pricebook2Id, OpportunityLineItem.OpportunityId).
    #[serde(skip)]
    pub create_only: bool,
    /// A component of this compound field (BillingCity → BillingAddress).
    #[serde(skip)]
    pub compound: Option<String>,
}

impl FieldDef {
    pub fn new(name: &str, ty: FieldType) -> Self {
        FieldDef {
            name: name.into(),
            ty,
            label: None,
            length: None,
            precision: None,
            scale: None,
            required: false,
            unique: false,
            external_id: false,
            reference_to: Vec::new(),
            relationship_name: None,
            picklist_values: Vec::new(),
            default_value: None,
            auto_number: None,
            child_relationship_name: None,
            system: false,
            create_only: false,
            compound: None,
        }
    }
    fn create_only(mut self) -> Self {
        self.create_only = true;
        self
    }
    fn len(mut self, n: u32) -> Self {
        self.length = Some(n);
        self
    }
    fn children(mut self, rel: &str) -> Self {
        self.child_relationship_name = Some(rel.into());
        self
    }
    fn auto(mut self, format: &str) -> Self {
        self.auto_number = Some(format.into());
        self.system = true;
        self
    }
    fn polymorphic(mut self, to: &[&str], rel: &str) -> Self {
        self.reference_to = to.iter().map(|t| t.to_string()).collect();
        self.relationship_name = Some(rel.into());
        self
    }
    fn default_to(mut self, v: &str) -> Self {
        self.default_value = Some(v.into());
        self
    }
    fn required(mut self) -> Self {
        self.required = true;
        self
    }
    fn reference(mut self, to: &str, rel: &str) -> Self {
        self.reference_to = vec![to.into()];
        self.relationship_name = Some(rel.into());
        self
    }
    fn picklist(mut self, values: &[&str]) -> Self {
        self.picklist_values = values.iter().map(|v| v.to_string()).collect();
        self
    }
    fn system(mut self) -> Self {
        self.system = true;
        self
    }
    fn money(mut self, precision: u32, scale: u32) -> Self {
        self.precision = Some(precision);
        self.scale = Some(scale);
        self
    }
    pub fn is_custom(&self) -> bool {
        self.name.ends_with("__c")
    }
    /// A long or rich text area (a text area of more than 255 characters): selected and
    /// searched, never filtered, sorted or grouped in SOQL.
    pub fn is_long_text(&self) -> bool {
        self.ty == FieldType::Textarea && self.text_length() > 255
    }
    /// Whether SOQL takes the field in WHERE (describe's `filterable`).
    pub fn filterable(&self) -> bool {
        self.ty != FieldType::Address && !self.is_long_text()
    }
    /// Whether SOQL takes the field in ORDER BY (describe's `sortable`).
    pub fn sortable(&self) -> bool {
        self.filterable()
    }
    /// Whether SOQL takes the field in GROUP BY (describe's `groupable`).
    pub fn groupable(&self) -> bool {
        self.filterable()
    }
    pub fn text_length(&self) -> u32 {
        self.length.unwrap_or(match self.ty {
            FieldType::Id | FieldType::Reference => 18,
            FieldType::Textarea => 32_768,
            FieldType::Email | FieldType::Url | FieldType::String | FieldType::Picklist => 255,
            FieldType::Phone => 40,
            FieldType::Multipicklist => 4_099,
            _ => 0,
        })
    }
}

/// One object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectDef {
    pub name: String,
    #[serde(default)]
    pub label: Option<String>,
    /// The plural label (default: the label's English plural).
    #[serde(default)]
    pub label_plural: Option<String>,
    #[serde(default)]
    pub key_prefix: Option<String>,
    #[serde(default)]
    pub fields: Vec<FieldDef>,
}

impl ObjectDef {
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }
    /// The reference field whose relationship name is `rel` (`Account` → `AccountId`).
    pub fn relationship(&self, rel: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| {
            f.relationship_name
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case(rel))
        })
    }
    pub fn is_custom(&self) -> bool {
        self.name.ends_with("__c")
    }
    /// The label (default: the name, `__c` and underscores dropped).
    pub fn label_text(&self) -> String {
        self.label.clone().unwrap_or_else(|| label_of(&self.name))
    }
    /// The plural label: the configured one, else the label's English plural (Property →
    /// Properties, Box → Boxes, Account → Accounts).
    pub fn plural_label(&self) -> String {
        if let Some(p) = &self.label_plural {
            return p.clone();
        }
        let l = self.label_text();
        let lower = l.to_ascii_lowercase();
        let consonant_y =
            lower.ends_with('y') && !lower[..lower.len() - 1].ends_with(['a', 'e', 'i', 'o', 'u']);
        if consonant_y {
            format!("{}ies", &l[..l.len() - 1])
        } else if ["s", "x", "z", "ch", "sh"]
            .iter()
            .any(|e| lower.ends_with(e))
        {
            format!("{l}es")
        } else {
            format!("{l}s")
        }
    }
    pub fn prefix(&self) -> &str {
        self.key_prefix.as_deref().unwrap_or("a00")
    }
}

/// The schema file (`concord sandbox --schema FILE`, TOML): custom objects, and custom fields
/// added to standard objects.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaFile {
    #[serde(default)]
    pub objects: Vec<ObjectDef>,
}

fn system_fields() -> Vec<FieldDef> {
    use FieldType::*;
    vec![
        FieldDef::new("Id", Id).system(),
        FieldDef::new("IsDeleted", Boolean).system(),
        FieldDef::new("CreatedDate", Datetime).system(),
        FieldDef::new("CreatedById", Reference)
            .reference("User", "CreatedBy")
            .system(),
        FieldDef::new("LastModifiedDate", Datetime).system(),
        FieldDef::new("LastModifiedById", Reference)
            .reference("User", "LastModifiedBy")
            .system(),
        FieldDef::new("SystemModstamp", Datetime).system(),
    ]
}

/// An address: its components, Latitude / Longitude / GeocodeAccuracy, and the read-only
/// compound field (`BillingAddress`; a Lead's is `Address`) the org keeps from them.
fn address(prefix: &str) -> Vec<FieldDef> {
    let compound = format!("{prefix}Address");
    let mut out: Vec<FieldDef> = ["Street", "City", "State", "PostalCode", "Country"]
        .iter()
        .map(|p| {
            let (ty, len) = match *p {
                "Street" => (FieldType::Textarea, 255),
                "PostalCode" => (FieldType::String, 20),
                "City" => (FieldType::String, 40),
                _ => (FieldType::String, 80),
            };
            FieldDef::new(&format!("{prefix}{p}"), ty).len(len)
        })
        .collect();
    for p in ["Latitude", "Longitude"] {
        let mut f = FieldDef::new(&format!("{prefix}{p}"), FieldType::Double);
        f.precision = Some(18);
        f.scale = Some(15);
        out.push(f);
    }
    out.push(
        FieldDef::new(&format!("{prefix}GeocodeAccuracy"), FieldType::Picklist).picklist(&[
            "Address",
            "NearAddress",
            "Block",
            "Street",
            "ExtendedZip",
            "Zip",
            "Neighborhood",
            "City",
            "County",
            "State",
            "Unknown",
        ]),
    );
    for f in &mut out {
        f.compound = Some(compound.clone());
    }
    out.push(FieldDef::new(&compound, FieldType::Address).system());
    out
}

/// The components of an address compound field, in the order its value lists them: the
/// value's key and the component field's suffix.
pub const ADDRESS_PARTS: [(&str, &str); 8] = [
    ("city", "City"),
    ("country", "Country"),
    ("geocodeAccuracy", "GeocodeAccuracy"),
    ("latitude", "Latitude"),
    ("longitude", "Longitude"),
    ("postalCode", "PostalCode"),
    ("state", "State"),
    ("street", "Street"),
];

/// A custom object with the standard system, Name and OwnerId fields.
pub fn custom_object(name: &str, prefix: &str) -> ObjectDef {
    let mut def = object(name, prefix, Vec::new());
    def.fields.push(FieldDef::new("Name", FieldType::String));
    def.fields
        .push(FieldDef::new("OwnerId", FieldType::Reference).reference("User", "Owner"));
    def
}

/// A reference field with Salesforce's naming (`Broker__c` → relationship `Broker__r`).
pub fn reference_field(name: &str, to: &str) -> FieldDef {
    let rel = match name.strip_suffix("__c") {
        Some(base) => format!("{base}__r"),
        None => name.strip_suffix("Id").unwrap_or(name).to_string(),
    };
    FieldDef::new(name, FieldType::Reference).reference(to, &rel)
}

fn object(name: &str, prefix: &str, mut fields: Vec<FieldDef>) -> ObjectDef {
    let mut all = system_fields();
    all.append(&mut fields);
    ObjectDef {
        name: name.into(),
        label: None,
        label_plural: None,
        key_prefix: Some(prefix.into()),
        fields: all,
    }
}

/// Fields every activity-tracked object has, read-only (LastActivityDate, LastViewedDate,
/// LastReferencedDate).
fn activity_stamps() -> Vec<FieldDef> {
    use FieldType::*;
    vec![
        FieldDef::new("LastActivityDate", Date).system(),
        FieldDef::new("LastViewedDate", Datetime).system(),
        FieldDef::new("LastReferencedDate", Datetime).system(),
    ]
}

/// The standard objects the sandbox knows, with their common fields: Account, Contact,
/// Opportunity, Lead, Product2, User, Task, Event, Case, Campaign, Pricebook2, PricebookEntry,
/// OpportunityLineItem and PushTopic.
pub fn standard_objects() -> Vec<ObjectDef> {
    use FieldType::*;
    let owner = || FieldDef::new("OwnerId", Reference).reference("User", "Owner");
    let master = |o: &str| {
        FieldDef::new("MasterRecordId", Reference)
            .reference(o, "MasterRecord")
            .system()
    };
    let clean = || {
        FieldDef::new("CleanStatus", Picklist).picklist(&[
            "Matched",
            "Different",
            "Acknowledged",
            "NotFound",
            "Inactive",
            "Pending",
            "SelectMatch",
            "Skipped",
        ])
    };
    let lead_source = || {
        FieldDef::new("LeadSource", Picklist).picklist(&[
            "Web",
            "Phone Inquiry",
            "Partner Referral",
            "Purchased List",
            "Other",
        ])
    };
    let mut account = vec![
        FieldDef::new("Name", String).required(),
        FieldDef::new("AccountNumber", String).len(40),
        FieldDef::new("Type", Picklist).picklist(&[
            "Prospect",
            "Customer - Direct",
            "Customer - Channel",
            "Technology Partner",
            "Other",
        ]),
        FieldDef::new("Industry", Picklist),
        FieldDef::new("Rating", Picklist).picklist(&["Hot", "Warm", "Cold"]),
        FieldDef::new("Phone", Phone),
        FieldDef::new("Fax", Phone),
        FieldDef::new("Website", Url),
        FieldDef::new("AnnualRevenue", Currency).money(18, 0),
        FieldDef::new("NumberOfEmployees", Int),
        FieldDef::new("Description", Textarea),
        FieldDef::new("ParentId", Reference)
            .reference("Account", "Parent")
            .children("ChildAccounts"),
        FieldDef::new("Sic", String).len(20),
        FieldDef::new("SicDesc", String).len(80),
        FieldDef::new("Ownership", Picklist).picklist(&[
            "Public",
            "Private",
            "Subsidiary",
            "Other",
        ]),
        FieldDef::new("TickerSymbol", String).len(20),
        FieldDef::new("Site", String).len(80),
        FieldDef::new("AccountSource", Picklist).picklist(&[
            "Web",
            "Phone Inquiry",
            "Partner Referral",
            "Purchased List",
            "Other",
        ]),
        FieldDef::new("Jigsaw", String).len(20),
        FieldDef::new("JigsawCompanyId", String).len(20).system(),
        clean(),
        FieldDef::new("DunsNumber", String).len(9),
        FieldDef::new("Tradestyle", String),
        FieldDef::new("NaicsCode", String).len(8),
        FieldDef::new("NaicsDesc", String).len(120),
        FieldDef::new("YearStarted", String).len(4),
        FieldDef::new("PhotoUrl", Url).system(),
        master("Account"),
        owner(),
    ];
    account.extend(address("Billing"));
    account.extend(address("Shipping"));
    account.extend(activity_stamps());
    let mut contact = vec![
        FieldDef::new("FirstName", String).len(40),
        FieldDef::new("LastName", String).required().len(80),
        // Compound, read-only: FirstName and LastName (as Salesforce computes it).
        FieldDef::new("Name", String).system(),
        FieldDef::new("Salutation", Picklist).picklist(&["Mr.", "Ms.", "Mrs.", "Dr.", "Prof."]),
        FieldDef::new("Title", String).len(128),
        FieldDef::new("Department", String).len(80),
        FieldDef::new("Email", Email),
        FieldDef::new("Phone", Phone),
        FieldDef::new("MobilePhone", Phone),
        FieldDef::new("HomePhone", Phone),
        FieldDef::new("OtherPhone", Phone),
        FieldDef::new("Fax", Phone),
        FieldDef::new("AssistantName", String).len(40),
        FieldDef::new("AssistantPhone", Phone),
        FieldDef::new("Birthdate", Date),
        FieldDef::new("Description", Textarea),
        lead_source(),
        FieldDef::new("HasOptedOutOfEmail", Boolean),
        FieldDef::new("DoNotCall", Boolean),
        FieldDef::new("AccountId", Reference)
            .reference("Account", "Account")
            .children("Contacts"),
        FieldDef::new("ReportsToId", Reference)
            .reference("Contact", "ReportsTo")
            .children("ReportsTo"),
        FieldDef::new("EmailBouncedReason", String),
        FieldDef::new("EmailBouncedDate", Datetime),
        FieldDef::new("IsEmailBounced", Boolean).system(),
        FieldDef::new("PhotoUrl", Url).system(),
        FieldDef::new("Jigsaw", String).len(20),
        FieldDef::new("JigsawContactId", String).len(20).system(),
        clean(),
        master("Contact"),
        owner(),
    ];
    contact.extend(address("Mailing"));
    contact.extend(address("Other"));
    contact.extend(activity_stamps());
    let mut opportunity = vec![
        FieldDef::new("Name", String).required().len(120),
        FieldDef::new("AccountId", Reference)
            .reference("Account", "Account")
            .children("Opportunities"),
        FieldDef::new("StageName", Picklist).required().picklist(&[
            "Prospecting",
            "Qualification",
            "Needs Analysis",
            "Value Proposition",
            "Id. Decision Makers",
            "Perception Analysis",
            "Proposal/Price Quote",
            "Negotiation/Review",
            "Closed Won",
            "Closed Lost",
        ]),
        FieldDef::new("CloseDate", Date).required(),
        FieldDef::new("Amount", Currency).money(16, 2),
        FieldDef::new("ExpectedRevenue", Currency)
            .money(16, 2)
            .system(),
        FieldDef::new("Probability", Percent).money(3, 0),
        FieldDef::new("TotalOpportunityQuantity", Double).money(16, 2),
        FieldDef::new("Type", Picklist).picklist(&[
            "Existing Customer - Upgrade",
            "Existing Customer - Replacement",
            "Existing Customer - Downgrade",
            "New Customer",
        ]),
        FieldDef::new("NextStep", String),
        lead_source(),
        FieldDef::new("ForecastCategoryName", Picklist).picklist(&[
            "Omitted",
            "Pipeline",
            "Best Case",
            "Commit",
            "Closed",
        ]),
        FieldDef::new("CampaignId", Reference)
            .reference("Campaign", "Campaign")
            .children("Opportunities"),
        FieldDef::new("Pricebook2Id", Reference)
            .reference("Pricebook2", "Pricebook2")
            .children("Opportunities"),
        FieldDef::new("Description", Textarea),
        FieldDef::new("IsClosed", Boolean),
        FieldDef::new("IsWon", Boolean),
        FieldDef::new("HasOpportunityLineItem", Boolean).system(),
        FieldDef::new("FiscalQuarter", Int).system(),
        FieldDef::new("FiscalYear", Int).system(),
        owner(),
    ];
    opportunity.extend(activity_stamps());
    let mut lead = vec![
        FieldDef::new("FirstName", String).len(40),
        FieldDef::new("LastName", String).required().len(80),
        // Compound, read-only: FirstName and LastName (as Salesforce computes it).
        FieldDef::new("Name", String).system(),
        FieldDef::new("Salutation", Picklist).picklist(&["Mr.", "Ms.", "Mrs.", "Dr.", "Prof."]),
        FieldDef::new("Company", String).required(),
        FieldDef::new("Title", String).len(128),
        FieldDef::new("Email", Email),
        FieldDef::new("Phone", Phone),
        FieldDef::new("Website", Url),
        FieldDef::new("Status", Picklist)
            .required()
            .picklist(&[
                "Open - Not Contacted",
                "Working - Contacted",
                "Closed - Converted",
                "Closed - Not Converted",
            ])
            .default_to("Open - Not Contacted"),
        lead_source(),
        FieldDef::new("Industry", Picklist),
        FieldDef::new("Rating", Picklist),
        FieldDef::new("AnnualRevenue", Currency).money(18, 0),
        FieldDef::new("NumberOfEmployees", Int),
        FieldDef::new("MobilePhone", Phone),
        FieldDef::new("Fax", Phone),
        FieldDef::new("Description", Textarea),
        FieldDef::new("HasOptedOutOfEmail", Boolean),
        FieldDef::new("DoNotCall", Boolean),
        FieldDef::new("IsConverted", Boolean).system(),
        FieldDef::new("ConvertedDate", Date).system(),
        FieldDef::new("ConvertedAccountId", Reference)
            .reference("Account", "ConvertedAccount")
            .system(),
        FieldDef::new("ConvertedContactId", Reference)
            .reference("Contact", "ConvertedContact")
            .system(),
        FieldDef::new("ConvertedOpportunityId", Reference)
            .reference("Opportunity", "ConvertedOpportunity")
            .system(),
        FieldDef::new("IsUnreadByOwner", Boolean),
        FieldDef::new("Jigsaw", String).len(20),
        clean(),
        master("Lead"),
        owner(),
    ];
    lead.extend(address(""));
    lead.extend(activity_stamps());
    let product = vec![
        FieldDef::new("Name", String).required(),
        FieldDef::new("ProductCode", String),
        FieldDef::new("Description", Textarea),
        FieldDef::new("Family", Picklist),
        FieldDef::new("IsActive", Boolean),
        FieldDef::new("StockKeepingUnit", String).len(180),
        FieldDef::new("QuantityUnitOfMeasure", Picklist).picklist(&["Each"]),
        FieldDef::new("ExternalId", String).len(255),
        FieldDef::new("DisplayUrl", Url).len(1000),
        FieldDef::new("IsArchived", Boolean).system(),
        FieldDef::new("LastViewedDate", Datetime).system(),
        FieldDef::new("LastReferencedDate", Datetime).system(),
    ];
    let user = vec![
        FieldDef::new("Username", String).required().len(80),
        FieldDef::new("FirstName", String).len(40),
        FieldDef::new("LastName", String).required().len(80),
        // Compound, read-only: FirstName and LastName (as Salesforce computes it).
        FieldDef::new("Name", String).system(),
        FieldDef::new("Email", Email).required(),
        FieldDef::new("Alias", String).len(8),
        FieldDef::new("IsActive", Boolean),
        FieldDef::new("Title", String).len(80),
        FieldDef::new("Department", String).len(80),
        FieldDef::new("Phone", Phone),
        FieldDef::new("MobilePhone", Phone),
        FieldDef::new("TimeZoneSidKey", Picklist),
        FieldDef::new("LocaleSidKey", Picklist),
        FieldDef::new("LanguageLocaleKey", Picklist),
        FieldDef::new("ManagerId", Reference).reference("User", "Manager"),
    ];
    let who = || FieldDef::new("WhoId", Reference).polymorphic(&["Contact", "Lead"], "Who");
    let what = |rel: &str| {
        FieldDef::new("WhatId", Reference)
            .polymorphic(
                &["Account", "Opportunity", "Case", "Campaign", "Product2"],
                "What",
            )
            .children(rel)
    };
    let task = vec![
        FieldDef::new("Subject", String),
        FieldDef::new("ActivityDate", Date),
        FieldDef::new("Status", Picklist)
            .required()
            .picklist(&[
                "Not Started",
                "In Progress",
                "Completed",
                "Waiting on someone else",
                "Deferred",
            ])
            .default_to("Not Started"),
        FieldDef::new("Priority", Picklist)
            .required()
            .picklist(&["High", "Normal", "Low"])
            .default_to("Normal"),
        FieldDef::new("Type", Picklist).picklist(&["Call", "Email", "Meeting", "Other"]),
        FieldDef::new("TaskSubtype", Picklist).picklist(&["Task", "Email", "Call"]),
        who().children("Tasks"),
        what("Tasks"),
        FieldDef::new("AccountId", Reference)
            .reference("Account", "Account")
            .system(),
        FieldDef::new("Description", Textarea),
        FieldDef::new("IsClosed", Boolean).system(),
        FieldDef::new("IsHighPriority", Boolean).system(),
        FieldDef::new("CompletedDateTime", Datetime).system(),
        FieldDef::new("IsReminderSet", Boolean),
        FieldDef::new("ReminderDateTime", Datetime),
        FieldDef::new("CallDurationInSeconds", Int),
        FieldDef::new("CallType", Picklist).picklist(&["Internal", "Inbound", "Outbound"]),
        FieldDef::new("CallDisposition", String),
        owner(),
    ];
    let event = vec![
        FieldDef::new("Subject", String),
        FieldDef::new("Location", String),
        FieldDef::new("StartDateTime", Datetime),
        FieldDef::new("EndDateTime", Datetime),
        FieldDef::new("ActivityDateTime", Datetime),
        FieldDef::new("ActivityDate", Date),
        FieldDef::new("DurationInMinutes", Int),
        FieldDef::new("IsAllDayEvent", Boolean),
        FieldDef::new("IsPrivate", Boolean),
        FieldDef::new("ShowAs", Picklist).picklist(&["Busy", "OutOfOffice", "Free"]),
        FieldDef::new("Type", Picklist).picklist(&["Call", "Email", "Meeting", "Other"]),
        who().children("Events"),
        what("Events"),
        FieldDef::new("AccountId", Reference)
            .reference("Account", "Account")
            .system(),
        FieldDef::new("Description", Textarea),
        owner(),
    ];
    let mut case = vec![
        FieldDef::new("CaseNumber", String)
            .len(30)
            .auto("{00000000}"),
        FieldDef::new("Subject", String),
        FieldDef::new("Description", Textarea),
        FieldDef::new("Status", Picklist)
            .required()
            .picklist(&["New", "Working", "Escalated", "Closed"])
            .default_to("New"),
        FieldDef::new("Priority", Picklist)
            .picklist(&["High", "Medium", "Low"])
            .default_to("Medium"),
        FieldDef::new("Origin", Picklist).picklist(&["Phone", "Email", "Web"]),
        FieldDef::new("Type", Picklist).picklist(&[
            "Mechanical",
            "Electrical",
            "Electronic",
            "Structural",
            "Other",
        ]),
        FieldDef::new("Reason", Picklist).picklist(&[
            "Installation",
            "Equipment Complexity",
            "Performance",
            "Breakdown",
            "Equipment Design",
            "Feedback",
            "Other",
        ]),
        FieldDef::new("AccountId", Reference)
            .reference("Account", "Account")
            .children("Cases"),
        FieldDef::new("ContactId", Reference)
            .reference("Contact", "Contact")
            .children("Cases"),
        FieldDef::new("ParentId", Reference)
            .reference("Case", "Parent")
            .children("Cases"),
        FieldDef::new("SuppliedName", String).len(80),
        FieldDef::new("SuppliedEmail", Email),
        FieldDef::new("SuppliedPhone", String).len(40),
        FieldDef::new("SuppliedCompany", String).len(80),
        FieldDef::new("IsEscalated", Boolean),
        FieldDef::new("IsClosed", Boolean).system(),
        FieldDef::new("ClosedDate", Datetime).system(),
        FieldDef::new("ContactEmail", Email).system(),
        FieldDef::new("ContactPhone", Phone).system(),
        owner(),
    ];
    case.extend([
        FieldDef::new("LastViewedDate", Datetime).system(),
        FieldDef::new("LastReferencedDate", Datetime).system(),
    ]);
    let mut campaign = vec![
        FieldDef::new("Name", String).required().len(80),
        FieldDef::new("Type", Picklist).picklist(&[
            "Conference",
            "Webinar",
            "Trade Show",
            "Public Relations",
            "Partners",
            "Referral Program",
            "Advertisement",
            "Banner Ads",
            "Direct Mail",
            "Email",
            "Telemarketing",
            "Other",
        ]),
        FieldDef::new("Status", Picklist).picklist(&[
            "Planned",
            "In Progress",
            "Completed",
            "Aborted",
        ]),
        FieldDef::new("StartDate", Date),
        FieldDef::new("EndDate", Date),
        FieldDef::new("ExpectedRevenue", Currency).money(18, 0),
        FieldDef::new("BudgetedCost", Currency).money(18, 0),
        FieldDef::new("ActualCost", Currency).money(18, 0),
        FieldDef::new("ExpectedResponse", Percent).money(10, 2),
        FieldDef::new("NumberSent", Double).money(18, 0),
        FieldDef::new("IsActive", Boolean),
        FieldDef::new("Description", Textarea),
        FieldDef::new("ParentId", Reference)
            .reference("Campaign", "Parent")
            .children("ChildCampaigns"),
        FieldDef::new("NumberOfLeads", Int).system(),
        FieldDef::new("NumberOfContacts", Int).system(),
        FieldDef::new("NumberOfResponses", Int).system(),
        FieldDef::new("NumberOfOpportunities", Int).system(),
        FieldDef::new("AmountAllOpportunities", Currency)
            .money(18, 0)
            .system(),
        owner(),
    ];
    campaign.extend(activity_stamps());
    let pricebook = vec![
        FieldDef::new("Name", String).required(),
        FieldDef::new("IsActive", Boolean),
        FieldDef::new("Description", String),
        FieldDef::new("IsStandard", Boolean).system(),
        FieldDef::new("IsArchived", Boolean).system(),
        FieldDef::new("LastViewedDate", Datetime).system(),
        FieldDef::new("LastReferencedDate", Datetime).system(),
    ];
    let entry = vec![
        // Name and ProductCode are the product's (read-only).
        FieldDef::new("Name", String).system(),
        FieldDef::new("Pricebook2Id", Reference)
            .reference("Pricebook2", "Pricebook2")
            .children("PricebookEntries")
            .required()
            .create_only(),
        FieldDef::new("Product2Id", Reference)
            .reference("Product2", "Product2")
            .children("PricebookEntries")
            .required()
            .create_only(),
        FieldDef::new("UnitPrice", Currency).money(16, 2).required(),
        FieldDef::new("IsActive", Boolean),
        FieldDef::new("UseStandardPrice", Boolean),
        FieldDef::new("ProductCode", String).system(),
        FieldDef::new("IsArchived", Boolean).system(),
    ];
    let line = vec![
        FieldDef::new("OpportunityId", Reference)
            .reference("Opportunity", "Opportunity")
            .children("OpportunityLineItems")
            .required()
            .create_only(),
        FieldDef::new("PricebookEntryId", Reference)
            .reference("PricebookEntry", "PricebookEntry")
            .children("OpportunityLineItems")
            .create_only(),
        FieldDef::new("Product2Id", Reference)
            .reference("Product2", "Product2")
            .children("OpportunityLineItems")
            .create_only(),
        FieldDef::new("Name", String).system(),
        FieldDef::new("ProductCode", String).system(),
        FieldDef::new("Quantity", Double).money(12, 2).required(),
        FieldDef::new("UnitPrice", Currency).money(16, 2),
        FieldDef::new("TotalPrice", Currency).money(16, 2),
        FieldDef::new("ListPrice", Currency).money(16, 2).system(),
        FieldDef::new("Discount", Percent).money(18, 2),
        FieldDef::new("ServiceDate", Date),
        FieldDef::new("Description", String),
        FieldDef::new("SortOrder", Int),
    ];
    // A Streaming API channel: `/topic/{Name}` notifies of the records its query selects.
    let push_topic = vec![
        FieldDef::new("Name", String).required().len(25),
        FieldDef::new("Query", String).required().len(1300),
        FieldDef::new("ApiVersion", Double).required(),
        FieldDef::new("Description", String).len(400),
        FieldDef::new("IsActive", Boolean),
        FieldDef::new("NotifyForFields", Picklist).picklist(&[
            "All",
            "Referenced",
            "Select",
            "Where",
        ]),
        FieldDef::new("NotifyForOperationCreate", Boolean),
        FieldDef::new("NotifyForOperationUpdate", Boolean),
        FieldDef::new("NotifyForOperationDelete", Boolean),
        FieldDef::new("NotifyForOperationUndelete", Boolean),
    ];
    let labelled = |mut o: ObjectDef, label: &str| {
        o.label = Some(label.into());
        o
    };
    vec![
        object("Account", "001", account),
        object("Contact", "003", contact),
        object("Opportunity", "006", opportunity),
        object("Lead", "00Q", lead),
        labelled(object("Product2", "01t", product), "Product"),
        object("User", "005", user),
        object("Task", "00T", task),
        object("Event", "00U", event),
        object("Case", "500", case),
        object("Campaign", "701", campaign),
        labelled(object("Pricebook2", "01s", pricebook), "Price Book"),
        labelled(object("PricebookEntry", "01u", entry), "Price Book Entry"),
        labelled(
            object("OpportunityLineItem", "00k", line),
            "Opportunity Product",
        ),
        labelled(object("PushTopic", "0IF", push_topic), "Push Topic"),
    ]
}

/// The standard objects plus a schema file's objects and fields. Custom objects get key
/// prefixes `a00`, `a01`, … in file order unless they set one.
pub fn build(schema: &SchemaFile) -> Result<Vec<ObjectDef>, crate::InvalidInput> {
    let mut objects = standard_objects();
    let mut n = 0u32;
    for o in &schema.objects {
        for f in &o.fields {
            if !f.name.ends_with("__c") {
                return Err(format!("{}.{}: custom field names end in __c", o.name, f.name).into());
            }
            if f.ty == FieldType::Reference && f.reference_to.is_empty() {
                return Err(
                    format!("{}.{}: a reference needs reference_to", o.name, f.name).into(),
                );
            }
        }
        // An AutoNumber is numbered by the org: read-only for clients.
        let mut o = o.clone();
        for f in &mut o.fields {
            if f.auto_number.is_some() {
                f.system = true;
            }
        }
        let o = &o;
        match objects
            .iter_mut()
            .find(|x| x.name.eq_ignore_ascii_case(&o.name))
        {
            Some(existing) => existing.fields.extend(o.fields.iter().cloned()),
            None => {
                if !o.name.ends_with("__c") {
                    return Err(format!(
                        "{}: unknown standard object (custom objects end in __c)",
                        o.name
                    )
                    .into());
                }
                let prefix = match &o.key_prefix {
                    Some(p) if p.len() == 3 && p.chars().all(|c| c.is_ascii_alphanumeric()) => {
                        p.clone()
                    }
                    Some(p) => {
                        return Err(format!(
                            "{}: key_prefix {p:?} must be 3 letters or digits",
                            o.name
                        )
                        .into())
                    }
                    None => {
                        let p = format!("a{:02}", n);
                        n += 1;
                        p
                    }
                };
                let mut def = object(&o.name, &prefix, Vec::new());
                def.label = o.label.clone();
                def.fields.push(FieldDef::new("Name", FieldType::String));
                def.fields.push(
                    FieldDef::new("OwnerId", FieldType::Reference).reference("User", "Owner"),
                );
                def.fields.extend(o.fields.iter().cloned());
                objects.push(def);
            }
        }
    }
    Ok(objects)
}

fn label_of(name: &str) -> String {
    name.trim_end_matches("__c").replace('_', " ")
}

/// One field in describe form (the keys Salesforce returns, as in the recorded fixtures).
pub fn describe_field(f: &FieldDef) -> J {
    let number = matches!(
        f.ty,
        FieldType::Int | FieldType::Double | FieldType::Currency | FieldType::Percent
    );
    let len = if f.ty.is_text() { f.text_length() } else { 0 };
    let createable = !f.system;
    json!({
        "aggregatable": f.groupable(),
        "autoNumber": f.auto_number.is_some(),
        "byteLength": len * 3,
        "calculated": false,
        "calculatedFormula": null,
        "caseSensitive": false,
        "compoundFieldName": f.compound,
        "controllerName": null,
        "createable": createable,
        "custom": f.is_custom(),
        "defaultValue": f.default_value,
        "defaultValueFormula": null,
        "defaultedOnCreate": f.system || f.ty == FieldType::Boolean || f.default_value.is_some(),
        "dependentPicklist": false,
        "deprecatedAndHidden": false,
        "digits": if f.ty == FieldType::Int { 9 } else { 0 },
        "externalId": f.external_id,
        "filterable": f.filterable(),
        "groupable": f.groupable(),
        "htmlFormatted": false,
        "idLookup": f.ty == FieldType::Id || f.external_id,
        "inlineHelpText": null,
        "label": f.label.clone().unwrap_or_else(|| label_of(&f.name)),
        "length": len,
        "name": f.name,
        "nameField": f.name == "Name",
        "namePointing": false,
        "nillable": !(f.required || f.ty == FieldType::Boolean || f.name == "Id" || f.auto_number.is_some()),
        "picklistValues": f.picklist_values.iter().map(|v| json!({
            "active": true, "defaultValue": false, "label": v, "validFor": null, "value": v
        })).collect::<Vec<_>>(),
        "precision": if number && f.ty != FieldType::Int { f.precision.unwrap_or(18) } else { 0 },
        "polymorphicForeignKey": f.reference_to.len() > 1,
        "referenceTo": f.reference_to,
        "relationshipName": f.relationship_name,
        "relationshipOrder": null,
        "restrictedPicklist": false,
        "scale": if number { f.scale.unwrap_or(if f.ty == FieldType::Currency { 2 } else { 0 }) } else { 0 },
        "soapType": f.ty.soap(),
        "sortable": f.sortable(),
        "type": f.ty.name(),
        "unique": f.unique,
        "updateable": createable && !f.create_only && f.name != "Id",
        "writeRequiresMasterRead": false,
    })
}

/// The relationship name parents use for the children a reference field `f` of `child` makes
/// (`Contacts` for Contact.AccountId): the field's own, else for a custom field the child
/// object's plural label without spaces and `__r`; system references (CreatedById, OwnerId, …)
/// and standard ones without a name have none.
pub fn child_relationship(child: &ObjectDef, f: &FieldDef) -> Option<String> {
    if let Some(n) = &f.child_relationship_name {
        return Some(n.clone());
    }
    if !f.is_custom() {
        return None;
    }
    let plural: String = child
        .plural_label()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    Some(format!("{plural}__r"))
}

/// Every reference to `o` among `objects`, as describe's `childRelationships` lists them.
pub fn child_relationships(o: &ObjectDef, objects: &[ObjectDef]) -> Vec<J> {
    let mut out = Vec::new();
    for child in objects {
        for f in child
            .fields
            .iter()
            .filter(|f| f.ty == FieldType::Reference && f.reference_to.iter().any(|t| t == &o.name))
        {
            let detail = f.required && f.create_only;
            out.push(json!({
                "cascadeDelete": detail,
                "childSObject": child.name,
                "deprecatedAndHidden": false,
                "field": f.name,
                "junctionIdListNames": [],
                "junctionReferenceTo": [],
                "relationshipName": child_relationship(child, f),
                "restrictedDelete": false,
            }));
        }
    }
    out
}

/// `sobjects/{S}/describe` (`objects`: the whole schema, for the child relationships).
pub fn describe(o: &ObjectDef, version: &str, objects: &[ObjectDef]) -> J {
    let base = format!("/services/data/v{version}/sobjects/{}", o.name);
    json!({
        "name": o.name,
        "label": o.label.clone().unwrap_or_else(|| label_of(&o.name)),
        "labelPlural": o.plural_label(),
        "keyPrefix": o.prefix(),
        "custom": o.is_custom(),
        "createable": true,
        "updateable": true,
        "deletable": true,
        "undeletable": true,
        "queryable": true,
        "retrieveable": true,
        "searchable": true,
        "replicateable": true,
        "triggerable": true,
        "layoutable": true,
        "fields": o.fields.iter().map(describe_field).collect::<Vec<_>>(),
        "childRelationships": child_relationships(o, objects),
        "recordTypeInfos": [],
        "urls": {
            "sobject": base,
            "describe": format!("{base}/describe"),
            "rowTemplate": format!("{base}/{{ID}}"),
        },
    })
}

/// One entry of `sobjects` (describeGlobal).
pub fn global_entry(o: &ObjectDef, version: &str) -> J {
    let base = format!("/services/data/v{version}/sobjects/{}", o.name);
    json!({
        "name": o.name,
        "label": o.label.clone().unwrap_or_else(|| label_of(&o.name)),
        "labelPlural": o.plural_label(),
        "keyPrefix": o.prefix(),
        "custom": o.is_custom(),
        "createable": true, "updateable": true, "deletable": true, "queryable": true,
        "retrieveable": true, "searchable": true, "replicateable": true, "triggerable": true,
        "layoutable": true, "undeletable": true, "activateable": false, "customSetting": false,
        "deprecatedAndHidden": false, "feedEnabled": false, "mergeable": false, "mruEnabled": true,
        "urls": {
            "sobject": base,
            "describe": format!("{base}/describe"),
            "rowTemplate": format!("{base}/{{ID}}"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_has_every_key_of_a_recorded_salesforce_describe() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fixtures/salesforce/restforce/sobject/sobject_describe_success_response.json");
        let real: J =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).unwrap();
        let real_field = &real["fields"][0];
        let all = standard_objects();
        let ours = describe(&all[0], "59.0", &all);
        let our_field = &ours["fields"][0];
        for key in real_field.as_object().unwrap().keys() {
            assert!(our_field.get(key).is_some(), "describe field lacks {key}");
        }
        assert_eq!(our_field["name"], "Id");
        assert_eq!(our_field["type"], real_field["type"]);
        assert_eq!(our_field["soapType"], real_field["soapType"]);
        assert_eq!(ours["keyPrefix"], "001");
    }

    #[test]
    fn schema_file_adds_custom_objects_and_fields() {
        let file: SchemaFile = toml::from_str(
            r#"
            [[objects]]
            name = "Property__c"
            [[objects.fields]]
            name = "Price__c"
            type = "currency"
            precision = 12
            scale = 2
            [[objects.fields]]
            name = "Broker__c"
            type = "reference"
            reference_to = ["Broker__c"]
            relationship_name = "Broker__r"

            [[objects]]
            name = "Account"
            [[objects.fields]]
            name = "Erp_Id__c"
            type = "string"
            external_id = true
            unique = true
            "#,
        )
        .unwrap();
        let objs = build(&file).unwrap();
        let prop = objs.iter().find(|o| o.name == "Property__c").unwrap();
        assert_eq!(prop.prefix(), "a00");
        assert!(
            prop.field("price__c").is_some(),
            "field lookup is case-insensitive"
        );
        assert_eq!(prop.relationship("Broker__r").unwrap().name, "Broker__c");
        let acct = objs.iter().find(|o| o.name == "Account").unwrap();
        assert!(acct.field("Erp_Id__c").unwrap().external_id);
        let bad: SchemaFile = toml::from_str("[[objects]]\nname = \"Thing\"\n").unwrap();
        assert!(build(&bad).unwrap_err().0.contains("__c"));
        assert!(
            toml::from_str::<SchemaFile>("[[objects]]\nname = \"X__c\"\ncolour = 1\n").is_err(),
            "unknown keys are errors"
        );
    }
}
