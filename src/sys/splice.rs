//! splice(2) through a pipe (Linux): a tunnel's bulk bytes move from one
//! socket to the other inside the kernel, never copied to user space.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The most moved by one splice call: the pipe's default capacity (a
/// larger pipe measured no faster, and would let a slow receiver pin more
/// kernel memory per tunnel).
pub const CHUNK: usize = 64 * 1024;

/// A pipe between two sockets, and how many bytes sit in it.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes spliced in and not yet out.
    pub held: usize,
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: both are open descriptors we now own.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Pipe {
            read,
            write,
            held: 0,
        })
    }

    /// Moves up to [`CHUNK`] bytes from socket `src` into the pipe: 0 at
    /// end of stream; `WouldBlock` when `src` has nothing now.
    pub fn fill(&mut self, src: &impl AsRawFd) -> io::Result<usize> {
        let n = splice(src.as_raw_fd(), self.write.as_raw_fd(), CHUNK)?;
        self.held += n;
        Ok(n)
    }

    /// Moves what the pipe holds into socket `dst`, as much as it takes now.
    pub fn drain(&mut self, dst: &impl AsRawFd) -> io::Result<usize> {
        let n = splice(self.read.as_raw_fd(), dst.as_raw_fd(), self.held)?;
        self.held -= n;
        Ok(n)
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: plain descriptors and null offsets (both are streams); the
    // kernel touches no memory of ours.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn moves_bytes_between_sockets_through_the_pipe() {
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (c, mut d) = std::os::unix::net::UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut pipe = Pipe::new().unwrap();
        assert_eq!(pipe.fill(&b).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        a.write_all(b"through the kernel").unwrap();
        assert_eq!(pipe.fill(&b).unwrap(), 18);
        assert_eq!(pipe.drain(&c).unwrap(), 18);
        assert_eq!(pipe.held, 0);
        let mut got = [0u8; 18];
        d.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"through the kernel");
        drop(a);
        assert_eq!(pipe.fill(&b).unwrap(), 0, "end of stream");
    }
}
