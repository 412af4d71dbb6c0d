//! The AWS IoT registry (the control plane, REST-JSON, signing name `iot`): things, thing types
//! and groups, policies, certificates and their attachments, and the device data endpoint.
//! Each call is one method; pacing and retries are the caller's (`app::aws`).

use serde_json::{Value, json};

use super::json::{ApiError, JsonApi};

/// What provision marks everything it makes with, and teardown checks before deleting.
pub const MADE_BY_KEY: &str = "createdBy";
pub const MADE_BY: &str = "freezer-fleet";

/// The registry of one account and region.
#[derive(Clone)]
pub struct Registry {
    pub api: JsonApi,
}

/// A certificate as the registry names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cert {
    pub id: String,
    pub arn: String,
}

/// A new certificate with its key (CreateKeysAndCertificate).
pub struct NewCert {
    pub cert: Cert,
    pub pem: String,
    /// Never logged or printed: written to the device's key file only.
    pub private_key: String,
}

fn tags() -> Value {
    json!([{"Key": MADE_BY_KEY, "Value": MADE_BY}])
}

fn s(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// Whether an error says the resource is not there.
pub fn not_found(e: &ApiError) -> bool {
    matches!(e, ApiError::Service { code, status, .. } if code == "ResourceNotFoundException" || *status == 404)
}

/// Whether an error says the resource exists already.
pub fn exists(e: &ApiError) -> bool {
    matches!(e, ApiError::Service { code, status, .. } if code == "ResourceAlreadyExistsException" || *status == 409)
}

impl Registry {
    /// The account's `iot:Data-ATS` endpoint (what `run --endpoint` takes).
    pub async fn endpoint(&self) -> Result<String, ApiError> {
        let v = self
            .api
            .rest("GET", "/endpoint?endpointType=iot%3AData-ATS", None, &[])
            .await?;
        Ok(s(&v, "endpointAddress"))
    }

    /// A thing's attributes, or None when it does not exist.
    pub async fn thing_attributes(&self, name: &str) -> Result<Option<Value>, ApiError> {
        match self.api.rest("GET", &format!("/things/{name}"), None, &[]).await {
            Ok(v) => Ok(Some(v.get("attributes").cloned().unwrap_or(json!({})))),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn create_thing(&self, name: &str, thing_type: Option<&str>) -> Result<(), ApiError> {
        let mut body = json!({"attributePayload": {"attributes": {MADE_BY_KEY: MADE_BY}}});
        if let Some(t) = thing_type {
            body["thingTypeName"] = json!(t);
        }
        self.api
            .rest("POST", &format!("/things/{name}"), Some(&body), &[])
            .await
            .map(|_| ())
    }

    /// Creates the thing type unless it exists.
    pub async fn ensure_thing_type(&self, name: &str) -> Result<(), ApiError> {
        match self
            .api
            .rest("GET", &format!("/thing-types/{name}"), None, &[])
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => {
                let body = json!({"thingTypeProperties": {"thingTypeDescription": "simulated freezers (freezer-fleet)"},
                    "tags": tags()});
                match self
                    .api
                    .rest("POST", &format!("/thing-types/{name}"), Some(&body), &[])
                    .await
                {
                    Err(e) if !exists(&e) => Err(e),
                    _ => Ok(()),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Creates the thing group unless it exists.
    pub async fn ensure_thing_group(&self, name: &str) -> Result<(), ApiError> {
        match self
            .api
            .rest("GET", &format!("/thing-groups/{name}"), None, &[])
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => {
                let body = json!({"thingGroupProperties": {"attributePayload": {"attributes": {MADE_BY_KEY: MADE_BY}}},
                    "tags": tags()});
                match self
                    .api
                    .rest("POST", &format!("/thing-groups/{name}"), Some(&body), &[])
                    .await
                {
                    Err(e) if !exists(&e) => Err(e),
                    _ => Ok(()),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Creates the policy unless it exists; true when it was made now.
    pub async fn ensure_policy(&self, name: &str, document: &str) -> Result<bool, ApiError> {
        match self
            .api
            .rest("GET", &format!("/policies/{name}"), None, &[])
            .await
        {
            Ok(_) => Ok(false),
            Err(e) if not_found(&e) => {
                let body = json!({"policyDocument": document, "tags": tags()});
                match self
                    .api
                    .rest("POST", &format!("/policies/{name}"), Some(&body), &[])
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if exists(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The policy's document, or None when there is no such policy.
    pub async fn policy_document(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self
            .api
            .rest("GET", &format!("/policies/{name}"), None, &[])
            .await
        {
            Ok(v) => Ok(Some(s(&v, "policyDocument"))),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn create_keys_and_certificate(&self) -> Result<NewCert, ApiError> {
        let v = self
            .api
            .rest("POST", "/keys-and-certificate?setAsActive=true", None, &[])
            .await?;
        Ok(NewCert {
            cert: Cert {
                id: s(&v, "certificateId"),
                arn: s(&v, "certificateArn"),
            },
            pem: s(&v, "certificatePem"),
            private_key: v["keyPair"]["PrivateKey"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// Registers a certificate signed by a CA not registered with IoT Core (multi-account
    /// registration), active.
    pub async fn register_without_ca(&self, pem: &str) -> Result<Cert, ApiError> {
        let body = json!({"certificatePem": pem, "status": "ACTIVE"});
        let v = self
            .api
            .rest("POST", "/certificate/register-no-ca", Some(&body), &[])
            .await?;
        Ok(Cert {
            id: s(&v, "certificateId"),
            arn: s(&v, "certificateArn"),
        })
    }

    /// A certificate by id, or None when the registry has none.
    pub async fn certificate(&self, id: &str) -> Result<Option<(Cert, String)>, ApiError> {
        match self
            .api
            .rest("GET", &format!("/certificates/{id}"), None, &[])
            .await
        {
            Ok(v) => {
                let d = &v["certificateDescription"];
                let cert = Cert {
                    id: s(d, "certificateId"),
                    arn: s(d, "certificateArn"),
                };
                Ok(Some((cert, s(d, "certificatePem"))))
            }
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn attach_policy(&self, policy: &str, target: &str) -> Result<(), ApiError> {
        let body = json!({"target": target});
        let path = format!("/target-policies/{policy}");
        self.api.rest("PUT", &path, Some(&body), &[]).await.map(|_| ())
    }

    pub async fn detach_policy(&self, policy: &str, target: &str) -> Result<(), ApiError> {
        let body = json!({"target": target});
        let path = format!("/target-policies/{policy}");
        self.api.rest("POST", &path, Some(&body), &[]).await.map(|_| ())
    }

    /// The policies attached to a certificate.
    pub async fn policies_of(&self, target: &str) -> Result<Vec<String>, ApiError> {
        let target = percent_encoding::utf8_percent_encode(target, percent_encoding::NON_ALPHANUMERIC);
        let v = self
            .api
            .rest(
                "POST",
                &format!("/attached-policies/{target}?recursive=false"),
                None,
                &[],
            )
            .await?;
        let names = v["policies"].as_array().cloned().unwrap_or_default();
        Ok(names.iter().map(|p| s(p, "policyName")).collect())
    }

    pub async fn attach_thing_principal(&self, thing: &str, principal: &str) -> Result<(), ApiError> {
        let path = format!("/things/{thing}/principals");
        self.api
            .rest("PUT", &path, None, &[("x-amzn-principal", principal)])
            .await
            .map(|_| ())
    }

    pub async fn detach_thing_principal(&self, thing: &str, principal: &str) -> Result<(), ApiError> {
        let path = format!("/things/{thing}/principals");
        self.api
            .rest("DELETE", &path, None, &[("x-amzn-principal", principal)])
            .await
            .map(|_| ())
    }

    pub async fn thing_principals(&self, thing: &str) -> Result<Vec<String>, ApiError> {
        let v = self
            .api
            .rest("GET", &format!("/things/{thing}/principals"), None, &[])
            .await?;
        let list = v["principals"].as_array().cloned().unwrap_or_default();
        Ok(list.iter().filter_map(|p| p.as_str().map(String::from)).collect())
    }

    pub async fn add_to_group(&self, group: &str, thing: &str) -> Result<(), ApiError> {
        let body = json!({"thingGroupName": group, "thingName": thing});
        self.api
            .rest("PUT", "/thing-groups/addThingToThingGroup", Some(&body), &[])
            .await
            .map(|_| ())
    }

    pub async fn remove_from_group(&self, group: &str, thing: &str) -> Result<(), ApiError> {
        let body = json!({"thingGroupName": group, "thingName": thing});
        self.api
            .rest("PUT", "/thing-groups/removeThingFromThingGroup", Some(&body), &[])
            .await
            .map(|_| ())
    }

    /// Deactivates and deletes a certificate.
    pub async fn delete_certificate(&self, id: &str) -> Result<(), ApiError> {
        self.api
            .rest(
                "PUT",
                &format!("/certificates/{id}?newStatus=INACTIVE"),
                None,
                &[],
            )
            .await?;
        self.api
            .rest("DELETE", &format!("/certificates/{id}"), None, &[])
            .await
            .map(|_| ())
    }

    pub async fn delete_thing(&self, name: &str) -> Result<(), ApiError> {
        self.api
            .rest("DELETE", &format!("/things/{name}"), None, &[])
            .await
            .map(|_| ())
    }

    /// Things whose `createdBy` attribute says freezer-fleet made them, all pages.
    pub async fn things_made_here(&self) -> Result<Vec<String>, ApiError> {
        let mut names = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut path =
                format!("/things?attributeName={MADE_BY_KEY}&attributeValue={MADE_BY}&maxResults=250");
            if let Some(token) = &next {
                let token = percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC);
                path.push_str(&format!("&nextToken={token}"));
            }
            let v = self.api.rest("GET", &path, None, &[]).await?;
            for t in v["things"].as_array().into_iter().flatten() {
                names.push(s(t, "thingName"));
            }
            match v.get("nextToken").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => return Ok(names),
            }
        }
    }

    /// The things in a group, all pages.
    pub async fn things_in_group(&self, group: &str) -> Result<Vec<String>, ApiError> {
        let mut names = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut path = format!("/thing-groups/{group}/things?maxResults=250");
            if let Some(token) = &next {
                let token = percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC);
                path.push_str(&format!("&nextToken={token}"));
            }
            let v = match self.api.rest("GET", &path, None, &[]).await {
                Err(e) if not_found(&e) => return Ok(names),
                other => other?,
            };
            for t in v["things"].as_array().into_iter().flatten() {
                if let Some(n) = t.as_str() {
                    names.push(n.to_string());
                }
            }
            match v.get("nextToken").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => return Ok(names),
            }
        }
    }

    /// A thing group's attributes, or None when it does not exist.
    pub async fn group_attributes(&self, name: &str) -> Result<Option<Value>, ApiError> {
        match self
            .api
            .rest("GET", &format!("/thing-groups/{name}"), None, &[])
            .await
        {
            Ok(v) => Ok(Some(
                v["thingGroupProperties"]["attributePayload"]["attributes"].clone(),
            )),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn delete_thing_group(&self, name: &str) -> Result<(), ApiError> {
        self.api
            .rest("DELETE", &format!("/thing-groups/{name}"), None, &[])
            .await
            .map(|_| ())
    }

    /// A thing type's description, or None when it does not exist.
    pub async fn thing_type_description(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self
            .api
            .rest("GET", &format!("/thing-types/{name}"), None, &[])
            .await
        {
            Ok(v) => Ok(Some(s(&v["thingTypeProperties"], "thingTypeDescription"))),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deprecates and deletes a thing type (AWS may refuse the delete until five minutes after
    /// the deprecation).
    pub async fn delete_thing_type(&self, name: &str) -> Result<(), ApiError> {
        let body = json!({"undoDeprecate": false});
        self.api
            .rest(
                "POST",
                &format!("/thing-types/{name}/deprecate"),
                Some(&body),
                &[],
            )
            .await?;
        self.api
            .rest("DELETE", &format!("/thing-types/{name}"), None, &[])
            .await
            .map(|_| ())
    }

    /// The certificates and other targets a policy is attached to.
    pub async fn policy_targets(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let v = self
            .api
            .rest("POST", &format!("/policy-targets/{name}"), None, &[])
            .await?;
        let list = v["targets"].as_array().cloned().unwrap_or_default();
        Ok(list.iter().filter_map(|t| t.as_str().map(String::from)).collect())
    }

    pub async fn delete_policy(&self, name: &str) -> Result<(), ApiError> {
        self.api
            .rest("DELETE", &format!("/policies/{name}"), None, &[])
            .await
            .map(|_| ())
    }
}
