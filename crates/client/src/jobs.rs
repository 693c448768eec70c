//! The jobs API: create a job, add inputs, end input, cancel, and read its status, inputs,
//! outputs, errors and failures (what `mjob` uses).

use bytes::Bytes;
use reqwest::Method;

use crate::client::MantaClient;
use crate::error::Error;

fn job_path(client: &MantaClient, job: &str) -> String {
    if job.starts_with('/') {
        job.to_owned()
    } else {
        format!("/{}/jobs/{job}", client.user())
    }
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

impl MantaClient {
    /// Creates a job from its JSON (`{"name", "phases": [...]}`) and returns its id.
    ///
    /// # Errors
    /// `InvalidJob` for a refused job, or any request failure.
    pub async fn create_job(&self, job: &serde_json::Value) -> Result<String, Error> {
        let body = Bytes::from(serde_json::to_vec(job).map_err(|e| Error::Config(e.to_string()))?);
        let resp = self
            .request(
                Method::POST,
                &format!("/{}/jobs", self.user()),
                &[],
                &[("content-type".into(), "application/json; type=job".into())],
                body,
            )
            .await?;
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        Ok(loc.rsplit('/').next().unwrap_or_default().to_owned())
    }

    /// Adds input object paths to a job; with `end`, also ends its input.
    ///
    /// # Errors
    /// `InvalidJobState` once input has ended, or any request failure.
    pub async fn add_job_inputs(
        &self,
        job: &str,
        inputs: &[String],
        end: bool,
    ) -> Result<(), Error> {
        let mut body = String::new();
        for i in inputs {
            body.push_str(&self.path(i)?.to_string());
            body.push('\n');
        }
        let q: Vec<(&str, String)> = if end {
            vec![("end", "true".into())]
        } else {
            vec![]
        };
        self.request(
            Method::POST,
            &format!("{}/live/in", job_path(self, job)),
            &q,
            &[("content-type".into(), "text/plain".into())],
            Bytes::from(body),
        )
        .await?;
        Ok(())
    }

    /// Ends a job's input.
    ///
    /// # Errors
    /// Any request failure.
    pub async fn end_job_input(&self, job: &str) -> Result<(), Error> {
        self.job_post(job, "live/in/end").await
    }

    /// Cancels a job.
    ///
    /// # Errors
    /// Any request failure.
    pub async fn cancel_job(&self, job: &str) -> Result<(), Error> {
        self.job_post(job, "live/cancel").await
    }

    async fn job_post(&self, job: &str, what: &str) -> Result<(), Error> {
        self.request(
            Method::POST,
            &format!("{}/{what}", job_path(self, job)),
            &[],
            &[("content-type".into(), "application/json".into())],
            Bytes::new(),
        )
        .await?;
        Ok(())
    }

    async fn job_get(&self, job: &str, what: &str) -> Result<String, Error> {
        let path = format!("{}/{what}", job_path(self, job));
        let resp = self
            .request(Method::GET, &path, &[], &[], Bytes::new())
            .await?;
        resp.text()
            .await
            .map_err(|source| Error::Http { path, source })
    }

    /// A job's status JSON (`state`, `stats`, `phases`, times).
    ///
    /// # Errors
    /// `JobNotFound`, or any request failure.
    pub async fn job_status(&self, job: &str) -> Result<serde_json::Value, Error> {
        let text = self.job_get(job, "live/status").await?;
        serde_json::from_str(&text).map_err(|e| Error::Config(format!("bad job status: {e}")))
    }

    /// A job's inputs.
    ///
    /// # Errors
    /// Any request failure.
    pub async fn job_inputs(&self, job: &str) -> Result<Vec<String>, Error> {
        Ok(lines(&self.job_get(job, "live/in").await?))
    }

    /// A job's outputs.
    ///
    /// # Errors
    /// Any request failure.
    pub async fn job_outputs(&self, job: &str) -> Result<Vec<String>, Error> {
        Ok(lines(&self.job_get(job, "live/out").await?))
    }

    /// Inputs whose processing failed.
    ///
    /// # Errors
    /// Any request failure.
    pub async fn job_failures(&self, job: &str) -> Result<Vec<String>, Error> {
        Ok(lines(&self.job_get(job, "live/fail").await?))
    }

    /// A job's errors, one JSON object each.
    ///
    /// # Errors
    /// Any request failure.
    pub async fn job_errors(&self, job: &str) -> Result<Vec<serde_json::Value>, Error> {
        lines(&self.job_get(job, "live/err").await?)
            .iter()
            .map(|l| {
                serde_json::from_str(l).map_err(|e| Error::Config(format!("bad error line: {e}")))
            })
            .collect()
    }

    /// All the caller's jobs (`state`: `running` or `done`; `name`: only those of that name),
    /// in job id order, page after page: `(id, mtime)`.
    ///
    /// # Errors
    /// Any request failure.
    pub async fn list_jobs(
        &self,
        state: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<(String, String)>, Error> {
        self.list_jobs_paged(state, name, 1024).await
    }

    /// [`list_jobs`](Self::list_jobs), asking for `page` jobs at a time (1 to 1,024).
    ///
    /// # Errors
    /// Any request failure.
    pub async fn list_jobs_paged(
        &self,
        state: Option<&str>,
        name: Option<&str>,
        page: usize,
    ) -> Result<Vec<(String, String)>, Error> {
        let path = format!("/{}/jobs", self.user());
        let mut jobs: Vec<(String, String)> = Vec::new();
        loop {
            // Each page starts after the last job of the one before.
            let marker = jobs.last().map(|j| j.0.clone());
            let q: Vec<(&str, String)> = [
                ("state", state.map(str::to_owned)),
                ("name", name.map(str::to_owned)),
                ("limit", Some(page.to_string())),
                ("marker", marker.clone()),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
            let resp = self
                .request(Method::GET, &path, &q, &[], Bytes::new())
                .await?;
            let text = resp.text().await.map_err(|source| Error::Http {
                path: path.clone(),
                source,
            })?;
            let got: Vec<(String, String)> = lines(&text)
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .map(|v| {
                    (
                        v["name"].as_str().unwrap_or_default().to_owned(),
                        v["mtime"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            let full = got.len() >= page;
            jobs.extend(got);
            if !full {
                return Ok(jobs);
            }
        }
    }
}
