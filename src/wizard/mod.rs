//! The guided wizard: questions behind a Prompter trait, answers validated as typed, result a Profile.
