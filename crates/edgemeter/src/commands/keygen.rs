//! `edgemeter keygen`: provisions an edge. Writes a fresh key to the edge's
//! key file and prints the line the cloud's keys file needs.

use crate::cli::KeygenArgs;
use crate::command_error::CommandError;
use crate::keys::{generate_key, write_key_file};

pub fn run(args: KeygenArgs) -> Result<(), CommandError> {
    let key = generate_key();
    write_key_file(&args.out, &key)?;
    eprintln!(
        "wrote {}'s key to {}; add the next line to the cloud's keys file:",
        args.edge_id,
        args.out.display()
    );
    println!("{} {}", args.edge_id, key.to_hex());
    Ok(())
}
