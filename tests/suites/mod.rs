//! Suites written once and run on every peer (`tests/peer/`): one test per suite and peer, named
//! `suites::<concern>::<peer>`.

// Every CPI method in the order BOSH calls them, and what each made on the peer.
mod lifecycle;
// SIGKILL at random points of creates and attach: nothing is left after the director's clean-up.
mod sigkill;
// Hostile input on every method: errors or escaping, no effect outside the CPI's areas, no panic.
mod hostile;
// Secret canaries on every method and error path.
mod secrets;
// Sixteen CPI processes at once on one stemcell.
mod parallel;
// A caller that goes away mid-call (stderr closed, stdout closed, parent killed) on every method: exits, leaves nothing.
mod caller_gone;
