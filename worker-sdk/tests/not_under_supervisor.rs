//! A worker started by something other than a drover supervisor is told
//! exactly what was wrong with the socket it expected, as a typed reason.
//! (One test in this file: it sets the environment the SDK reads.)

use std::os::fd::AsRawFd;
use std::time::Duration;

use drover_worker::{Error, NoSupervisor, Worker};

const LIMIT: Duration = Duration::from_secs(10);

async fn connect_with(fd: Option<&str>) -> NoSupervisor {
    match fd {
        Some(value) => std::env::set_var(drover_proto::ENV_FD, value),
        None => std::env::remove_var(drover_proto::ENV_FD),
    }
    match tokio::time::timeout(LIMIT, Worker::connect()).await {
        Ok(Err(Error::NotUnderSupervisor { reason })) => reason,
        Ok(Err(other)) => panic!("DROVER_FD={fd:?}: expected NotUnderSupervisor, got {other:?}"),
        Ok(Ok(worker)) => panic!("DROVER_FD={fd:?}: connected: {worker:?}"),
        Err(_) => panic!("DROVER_FD={fd:?}: connect hung"),
    }
}

#[tokio::test]
async fn each_way_of_not_being_under_a_supervisor_has_its_own_reason() {
    std::env::remove_var(drover_proto::ENV_PARENT_PID);

    assert!(matches!(connect_with(None).await, NoSupervisor::Unset));
    match connect_with(Some("three")).await {
        NoSupervisor::NotANumber { value } => assert_eq!(value, "three"),
        other => panic!("expected NotANumber, got {other:?}"),
    }
    assert!(matches!(
        connect_with(Some("1")).await,
        NoSupervisor::StandardStream { fd: 1 }
    ));

    // A number no descriptor of this process has.
    let closed = (900..1000)
        .find(|fd| !std::path::Path::new(&format!("/proc/self/fd/{fd}")).exists())
        .expect("a free descriptor number");
    match connect_with(Some(&closed.to_string())).await {
        NoSupervisor::NotOpen { fd, source } => {
            assert_eq!(fd, closed);
            assert_eq!(
                source.raw_os_error(),
                Some(rustix::io::Errno::BADF.raw_os_error())
            );
        }
        other => panic!("expected NotOpen, got {other:?}"),
    }

    // An open descriptor that is a file, not a socket: left open, not
    // claimed.
    let file = std::fs::File::open("/proc/self/status").unwrap();
    let raw = file.as_raw_fd();
    let reason = connect_with(Some(&raw.to_string())).await;
    assert!(
        matches!(reason, NoSupervisor::NotASocket { fd } if fd == raw),
        "{reason:?}"
    );
    assert_eq!(
        reason.to_string(),
        format!("DROVER_FD={raw} is not a socket"),
        "the message names the variable and the descriptor"
    );
    let mut text = String::new();
    std::io::Read::read_to_string(&mut &file, &mut text).expect("the file is still ours");
    assert!(text.contains("Pid:"));
}
