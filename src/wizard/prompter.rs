//! The `Prompter` seam: the question flow talks to this trait only, so it runs the same
//! against a terminal (dialoguer) and against a scripted queue of answers in tests
//! (dialoguer cannot be driven from memory: it needs a real terminal fd).

use std::collections::VecDeque;
use std::io::IsTerminal;

use secrecy::SecretString;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PromptError {
    #[error(
        "the wizard needs an interactive terminal, and stdin/stderr is not one\n  fix: write a profile (start from profiles/homelab.yaml) and use --profile FILE"
    )]
    NoTerminal,
    #[error("prompt failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the wizard was cancelled")]
    Cancelled,
    /// Esc at a choice: the flow goes back a page.
    #[error("went back a page")]
    Back,
    #[error("scripted answers: {0}")]
    Script(String),
}

/// What the wizard needs from a person. Validation happens in the flow, not here: a
/// prompter only asks and returns raw answers.
pub trait Prompter {
    /// Free text; an empty reply returns `default` (or "" when there is none).
    fn input(&mut self, prompt: &str, default: Option<&str>) -> Result<String, PromptError>;
    /// Hidden input; may be empty.
    fn password(&mut self, prompt: &str) -> Result<SecretString, PromptError>;
    fn confirm(&mut self, prompt: &str, default: bool) -> Result<bool, PromptError>;
    /// One of `items`; returns its index. Esc is [`PromptError::Back`].
    fn select(
        &mut self,
        prompt: &str,
        items: &[String],
        default: usize,
    ) -> Result<usize, PromptError>;
    /// Any of `items`; returns the chosen indices in item order. Esc is
    /// [`PromptError::Back`].
    fn multi_select(
        &mut self,
        prompt: &str,
        items: &[String],
        checked: &[bool],
    ) -> Result<Vec<usize>, PromptError>;
    /// Information for the person: a rejected answer's reason, a summary.
    fn note(&mut self, text: &str);
}

/// The real terminal. Construct only through [`DialoguerPrompter::new`], which refuses
/// when there is no terminal, because every dialoguer prompt fails without one.
pub struct DialoguerPrompter {
    _private: (),
}

impl DialoguerPrompter {
    pub fn new() -> Result<Self, PromptError> {
        if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            Ok(Self { _private: () })
        } else {
            Err(PromptError::NoTerminal)
        }
    }
}

fn io(e: dialoguer::Error) -> PromptError {
    match e {
        dialoguer::Error::IO(e) if e.kind() == std::io::ErrorKind::Interrupted => {
            PromptError::Cancelled
        }
        dialoguer::Error::IO(e) => PromptError::Io(e),
    }
}

impl Prompter for DialoguerPrompter {
    fn input(&mut self, prompt: &str, default: Option<&str>) -> Result<String, PromptError> {
        let mut q = dialoguer::Input::<String>::new()
            .with_prompt(prompt)
            .allow_empty(true);
        if let Some(d) = default.filter(|d| !d.is_empty()) {
            q = q.default(d.to_owned());
        }
        q.interact_text().map_err(io)
    }

    fn password(&mut self, prompt: &str) -> Result<SecretString, PromptError> {
        dialoguer::Password::new()
            .with_prompt(prompt)
            .allow_empty_password(true)
            .interact()
            .map(SecretString::from)
            .map_err(io)
    }

    fn confirm(&mut self, prompt: &str, default: bool) -> Result<bool, PromptError> {
        dialoguer::Confirm::new()
            .with_prompt(prompt)
            .default(default)
            .wait_for_newline(true)
            .interact()
            .map_err(io)
    }

    fn select(
        &mut self,
        prompt: &str,
        items: &[String],
        default: usize,
    ) -> Result<usize, PromptError> {
        dialoguer::Select::new()
            .with_prompt(format!("{prompt} (Esc: back)"))
            .items(items)
            .default(default)
            .interact_opt()
            .map_err(io)?
            .ok_or(PromptError::Back)
    }

    fn multi_select(
        &mut self,
        prompt: &str,
        items: &[String],
        checked: &[bool],
    ) -> Result<Vec<usize>, PromptError> {
        dialoguer::MultiSelect::new()
            .with_prompt(format!(
                "{prompt} (space toggles, enter accepts, Esc: back)"
            ))
            .items(items)
            .defaults(checked)
            .interact_opt()
            .map_err(io)?
            .ok_or(PromptError::Back)
    }

    fn note(&mut self, text: &str) {
        eprintln!("{text}");
    }
}

/// One scripted reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Press enter: take the default (input, confirm, select, multi-select).
    Default,
    Text(String),
    Yes,
    No,
    /// Select the item with this label.
    Pick(String),
    /// Multi-select exactly these labels.
    PickMany(Vec<String>),
    /// Esc at a select or multi-select.
    Back,
}

/// Test prompter: pops answers from a queue and records every question and note, so a
/// test can assert both what was produced and what the person was told.
#[derive(Debug, Default)]
pub struct ScriptedPrompter {
    answers: VecDeque<Answer>,
    pub questions: Vec<String>,
    pub notes: Vec<String>,
}

impl ScriptedPrompter {
    pub fn new(answers: impl IntoIterator<Item = Answer>) -> Self {
        Self {
            answers: answers.into_iter().collect(),
            ..Self::default()
        }
    }

    pub fn remaining(&self) -> usize {
        self.answers.len()
    }

    fn next(&mut self, prompt: &str) -> Result<Answer, PromptError> {
        self.questions.push(prompt.to_owned());
        self.answers
            .pop_front()
            .ok_or_else(|| PromptError::Script(format!("no answer left for question `{prompt}`")))
    }

    fn mismatch(prompt: &str, a: &Answer) -> PromptError {
        PromptError::Script(format!("answer {a:?} does not fit question `{prompt}`"))
    }
}

fn index_of(prompt: &str, items: &[String], label: &str) -> Result<usize, PromptError> {
    items.iter().position(|i| i == label).ok_or_else(|| {
        PromptError::Script(format!("`{label}` is not offered by `{prompt}`: {items:?}"))
    })
}

impl Prompter for ScriptedPrompter {
    fn input(&mut self, prompt: &str, default: Option<&str>) -> Result<String, PromptError> {
        match self.next(prompt)? {
            Answer::Default => Ok(default.unwrap_or_default().to_owned()),
            Answer::Text(t) => Ok(t),
            a => Err(Self::mismatch(prompt, &a)),
        }
    }

    fn password(&mut self, prompt: &str) -> Result<SecretString, PromptError> {
        match self.next(prompt)? {
            Answer::Default => Ok(SecretString::from(String::new())),
            Answer::Text(t) => Ok(SecretString::from(t)),
            a => Err(Self::mismatch(prompt, &a)),
        }
    }

    fn confirm(&mut self, prompt: &str, default: bool) -> Result<bool, PromptError> {
        match self.next(prompt)? {
            Answer::Default => Ok(default),
            Answer::Yes => Ok(true),
            Answer::No => Ok(false),
            a => Err(Self::mismatch(prompt, &a)),
        }
    }

    fn select(
        &mut self,
        prompt: &str,
        items: &[String],
        default: usize,
    ) -> Result<usize, PromptError> {
        match self.next(prompt)? {
            Answer::Default => Ok(default),
            Answer::Pick(l) => index_of(prompt, items, &l),
            Answer::Back => Err(PromptError::Back),
            a => Err(Self::mismatch(prompt, &a)),
        }
    }

    fn multi_select(
        &mut self,
        prompt: &str,
        items: &[String],
        checked: &[bool],
    ) -> Result<Vec<usize>, PromptError> {
        match self.next(prompt)? {
            Answer::Default => Ok((0..items.len())
                .filter(|&i| checked.get(i).copied().unwrap_or(false))
                .collect()),
            Answer::PickMany(ls) => {
                let mut v = ls
                    .iter()
                    .map(|l| index_of(prompt, items, l))
                    .collect::<Result<Vec<_>, _>>()?;
                v.sort_unstable();
                Ok(v)
            }
            Answer::Back => Err(PromptError::Back),
            a => Err(Self::mismatch(prompt, &a)),
        }
    }

    fn note(&mut self, text: &str) {
        self.notes.push(text.to_owned());
    }
}
