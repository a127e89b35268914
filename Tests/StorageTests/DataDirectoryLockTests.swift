import Glibc
import Testing

@testable import Storage

/// The data directory lock: one holder at a time, its pid in the LOCK file, the directory
/// created when missing. (The lock across processes is tested with real `synod serve`
/// processes in SynodServerTests.)
@Suite("Data directory lock")
struct DataDirectoryLockTests {
    private func temporaryDirectory(_ name: String) -> String {
        "/tmp/synod-lock-tests-\(getpid())-\(name)-\(UInt64.random(in: 0...UInt64.max))"
    }

    private func remove(_ directory: String) {
        _ = unlink(directory + "/" + DataDirectoryLock.fileName)
        _ = rmdir(directory)
    }

    @Test("creates a missing directory and writes the holder's pid into LOCK")
    func createsDirectoryAndRecordsPid() throws {
        let parent = temporaryDirectory("create")
        let directory = parent + "/r1"
        defer {
            remove(directory)
            _ = rmdir(parent)
        }
        let lock = try DataDirectoryLock(directory: directory)
        #expect(lock.path == directory + "/LOCK")
        #expect(access(lock.path, F_OK) == 0)
        #expect(DataDirectoryLock.holder(ofLockIn: directory) == getpid())
    }

    @Test("a second lock on the same directory fails and names the holder")
    func secondLockFails() throws {
        let directory = temporaryDirectory("second")
        defer { remove(directory) }
        let first = try DataDirectoryLock(directory: directory)
        #expect(throws: DataDirectoryLockError.inUse(directory: directory, holder: getpid())) {
            _ = try DataDirectoryLock(directory: directory)
        }
        let message = DataDirectoryLockError.inUse(directory: directory, holder: getpid()).description
        #expect(message == "data directory \(directory) is in use by process \(getpid())")
        withExtendedLifetime(first) {}
    }

    @Test("the lock is released when its holder goes away")
    func releasedWithItsHolder() throws {
        let directory = temporaryDirectory("release")
        defer { remove(directory) }
        do {
            let first = try DataDirectoryLock(directory: directory)
            withExtendedLifetime(first) {}
        }
        let second = try DataDirectoryLock(directory: directory)
        withExtendedLifetime(second) {}
    }

    @Test("a LOCK file left behind by a dead holder does not block")
    func staleLockFileDoesNotBlock() throws {
        let directory = temporaryDirectory("stale")
        defer { remove(directory) }
        #expect(mkdir(directory, 0o755) == 0)
        let descriptor = open(directory + "/LOCK", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        #expect(descriptor >= 0)
        let text = Array("999999\n".utf8)
        #expect(write(descriptor, text, text.count) == text.count)
        close(descriptor)
        let lock = try DataDirectoryLock(directory: directory)
        #expect(DataDirectoryLock.holder(ofLockIn: directory) == getpid())
        withExtendedLifetime(lock) {}
    }

    @Test("the message without a known holder still names the directory")
    func messageWithoutHolder() {
        let message = DataDirectoryLockError.inUse(directory: "./synod-data/r1", holder: nil).description
        #expect(message == "data directory ./synod-data/r1 is in use by another process")
    }
}
