//! The Trellis desktop app: arrives with the desktop-app issue.
