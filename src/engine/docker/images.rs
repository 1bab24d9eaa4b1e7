//! Images: what a name stands for, pulling one, building one from a context.

use std::collections::HashMap;

use futures_util::StreamExt;

use super::{Engine, EngineError};

/// Why an image could not be pulled: the registry's (or the engine's) refusal, as it says
/// it (an unknown name or tag, a registry out of reach, a login needed).
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// What the registry answered, relayed by the engine.
    #[error("{0}")]
    Refused(String),
    /// The engine's own refusal of the request.
    #[error("{0}")]
    Engine(Box<bollard::errors::Error>),
}

impl Engine {
    /// What the engine says of the image a name or tag stands for now.
    async fn inspect(&self, image: &str) -> Result<bollard::models::ImageInspect, EngineError> {
        let _request = self.request("inspect");
        self.docker
            .inspect_image(image)
            .await
            .map_err(|e| self.call_error("inspect image", e))
    }

    /// The id (`sha256:...`) of the image a name or tag stands for now.
    pub async fn image_id(&self, image: &str) -> Result<String, EngineError> {
        Ok(self.inspect(image).await?.id.unwrap_or_default())
    }

    /// The user an image runs as (`USER` in its Dockerfile), empty for root.
    pub async fn image_user(&self, image: &str) -> Result<String, EngineError> {
        let i = self.inspect(image).await?;
        Ok(i.config.and_then(|c| c.user).unwrap_or_default())
    }

    pub async fn image_present(&self, image: &str) -> Result<bool, EngineError> {
        Ok(self.image_id_if_present(image).await?.is_some())
    }

    /// The id of the image a name or tag stands for now, or `None` when the engine has
    /// no such image.
    pub async fn image_id_if_present(&self, image: &str) -> Result<Option<String>, EngineError> {
        let _request = self.request("image_id_if_present");
        let r = self.docker.inspect_image(image).await;
        Ok(self
            .found("inspect image", r)?
            .map(|i| i.id.unwrap_or_default()))
    }

    /// Pulls `image` (`name[:tag]`, `name@digest`); the registry's refusal, as it says it.
    pub async fn pull(&self, image: &str) -> Result<(), PullError> {
        let _request = self.request("pull");
        // Without a tag the engine would pull every tag of the repository.
        let last = image.rsplit('/').next().unwrap_or(image);
        let reference = if last.contains(':') || image.contains('@') {
            image.to_owned()
        } else {
            format!("{image}:latest")
        };
        let options = bollard::query_parameters::CreateImageOptions {
            from_image: Some(reference),
            ..Default::default()
        };
        let mut stream = self.docker.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail {
                        return Err(PullError::Refused(
                            detail.message.unwrap_or_else(|| "the pull failed".into()),
                        ));
                    }
                }
                Err(e) => return Err(PullError::Engine(Box::new(e))),
            }
        }
        Ok(())
    }

    /// Builds `tag` from a tar of the build context.
    pub async fn build_image(
        &self,
        tag: &str,
        context_tar: Vec<u8>,
        dockerfile: &str,
        args: HashMap<String, String>,
    ) -> Result<(), EngineError> {
        let _request = self.request("build_image");
        let options = bollard::query_parameters::BuildImageOptions {
            dockerfile: dockerfile.to_owned(),
            t: Some(tag.to_owned()),
            rm: true,
            forcerm: true,
            buildargs: (!args.is_empty()).then_some(args),
            ..Default::default()
        };
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(context_tar.into())));
        let mut output: Vec<String> = Vec::new();
        while let Some(item) = stream.next().await {
            let failure = |reason: String| EngineError::Build {
                region: self.region.clone(),
                image: tag.to_owned(),
                reason,
            };
            match item {
                Ok(info) => {
                    if let Some(line) = info.stream {
                        output.push(line.trim_end().to_owned());
                    }
                    if let Some(detail) = info.error_detail {
                        let last: Vec<String> =
                            output.iter().rev().take(5).rev().cloned().collect();
                        return Err(failure(format!(
                            "{}\n{}",
                            detail.message.unwrap_or_default(),
                            last.join("\n")
                        )));
                    }
                }
                Err(e) => return Err(failure(e.to_string())),
            }
        }
        Ok(())
    }
}
