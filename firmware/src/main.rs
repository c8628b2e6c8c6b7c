fn main() {
    std::process::exit(peercom::cli::main());
}
