//! Waiting for a condition, with a deadline that names what was awaited.

use std::time::{Duration, Instant};

/// Poll `f` every 50 ms until it returns `Some`, or panic after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`wait_for`] on the tokio clock (a paused clock advances instead of waiting): polls `f`
/// every 50 ms, panics after `secs` seconds naming `what`.
pub async fn until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {secs}s waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value() {
        let mut n = 0;
        let v = wait_for("three polls", Duration::from_secs(5), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for nothing")]
    fn names_what_timed_out() {
        wait_for("nothing", Duration::from_millis(100), || None::<()>);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn until_returns_the_value() {
        assert_eq!(until(1, "a value", || Some(7)).await, 7);
    }
}
